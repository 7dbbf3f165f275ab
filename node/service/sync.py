"""Anti-entropy between members: exchange version vectors, send what the other lacks.

Theory of operation
-------------------
Because delivery is causal and per-author contiguous, the set of events a
node holds in a group is summed up exactly by its version vector (author ->
highest seq). When a member's channel comes up, and every ``interval``
seconds, a node sends each member it has a channel to its vector (``want``).
The receiver streams back every event the sender lacks, in its own storage
order (which is causal order, so the sender can deliver each event on
arrival), in batches of at most ``MAX_EVENTS`` events and ``BATCH_BYTES``
bytes read page by page from SQLite (never the whole history in memory),
and waits for the batch's last event to be acknowledged before sending the
next (backpressure: live traffic shares the same queue and is never stuck
behind more than one batch). If the receiver itself lacks something the
sender has, it answers with its own vector, and the sender streams back.

Any member relays any member's events: they are signed, and in private groups
encrypted for the group, so a member who was away catches up from whoever it
meets first. Pairwise-mode copies are the exception: only the author holds
each recipient's copy, so a relayed pairwise message is stored unreadable
until its author pushes the copy (its outbox does, when they next meet).

A peer's vector also tells which of our events it has: delivery receipts
without a receipt per message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from node.group.events import EventId, GroupId, Kind
from node.ids import PeerId, short_id
from node.sync.plan import Batcher, behind, missing
from node.wire.messages import (
    MAX_EVENTS,
    EventsMessage,
    VectorMessage,
    encode_message,
)

if TYPE_CHECKING:
    from node.group.membership import MembershipEvent
    from node.net.connection import PeerConnection
    from node.service.groups import Group, GroupService

log = logging.getLogger(__name__)

BATCH_BYTES = 512 * 1024
#: After relayed events arrive, tell the other members this much later (coalesces bursts).
NUDGE_DELAY = 0.2
PAGE = 512
#: A batch not acknowledged within this many seconds ends the session (retried later).
ACK_TIMEOUT = 30.0


class Sync:
    def __init__(self, service: GroupService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._sessions: dict[tuple[PeerId, GroupId], trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._nudged: set[GroupId] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                for peer in list(self.service.node.connections):
                    self.announce(peer)

    # -- vectors --

    def announce(self, peer: PeerId) -> None:
        """Send ``peer`` our vector for every group we share."""
        for group in self.service.groups.values():
            if self._shared(group, peer):
                self._send_vector(group, peer, want=True)

    def nudge(self, group: Group) -> None:
        """We got events through someone other than their author: let the others know.

        Without this, events relayed to us would reach our other neighbours only at
        the next periodic exchange; with it, a healed partition converges at once.
        """
        if self._nursery is None or group.id in self._nudged:
            return
        self._nudged.add(group.id)
        self._nursery.start_soon(self._announce_later, group)

    async def _announce_later(self, group: Group) -> None:
        await trio.sleep(NUDGE_DELAY)
        self._nudged.discard(group.id)
        for peer in list(self.service.node.connections):
            if self._shared(group, peer):
                self._send_vector(group, peer, want=True)

    def _shared(self, group: Group, peer: PeerId) -> bool:
        members = group.core.state.members
        if self.service.me not in members:
            return False
        return peer in members or self._departure(group, peer) is not None

    @staticmethod
    def _departure(group: Group, peer: PeerId) -> MembershipEvent | None:
        """The event by which ``peer`` left the group (if it did, and is not back)."""
        if peer in group.core.state.members:
            return None
        for dep in reversed(group.core.state.departures):
            if dep.member == peer:
                return dep.event
        return None

    def _send_vector(self, group: Group, peer: PeerId, *, want: bool) -> None:
        conn = self.service.node.connections.get(peer)
        if conn is None:
            return
        vector = tuple(sorted((a, n) for a, n in group.core.frontier.items() if n > 0))
        conn.send_nowait(encode_message(VectorMessage(group.id, vector, want)))

    def on_vector(self, sender: PeerId, message: VectorMessage) -> None:
        group = self.service.groups.get(message.group)
        if group is None or not self._shared(group, sender):
            return
        theirs = dict(message.vector)
        group.peer_vectors[sender] = theirs
        mine = group.core.frontier
        if behind(mine, theirs):
            self._start(group, sender, theirs)
        if message.want and behind(theirs, mine):
            self._send_vector(group, sender, want=False)
        self.service._notify(group, [])

    # -- sessions --

    def _start(self, group: Group, peer: PeerId, theirs: dict[PeerId, int]) -> None:
        if self._nursery is None:
            return
        key = (peer, group.id)
        old = self._sessions.pop(key, None)
        if old is not None:
            old.cancel()  # a newer vector supersedes what the old session was sending
        scope = trio.CancelScope()
        self._sessions[key] = scope
        self._nursery.start_soon(self._session, group, peer, theirs, scope)

    async def _session(
        self, group: Group, peer: PeerId, theirs: dict[PeerId, int], scope: trio.CancelScope
    ) -> None:
        sent = 0
        departure = self._departure(group, peer)
        try:
            with scope:
                after = self._first_position(group, theirs)
                batcher: Batcher[tuple[EventId, bytes, PeerId, Kind]] = Batcher(
                    MAX_EVENTS, BATCH_BYTES)
                while True:
                    page = self.service.store.events_page(group.id, after, PAGE)
                    if not page:
                        break
                    after = page[-1][0]
                    for row in missing((row for _, row in page), theirs):
                        if departure is not None and not departure.saw(row.author, row.seq):
                            continue  # a departed member gets what led to its departure, no more
                        item = (row.id, row.raw, row.author, Kind(row.kind))
                        full = batcher.add(item, len(row.raw))
                        if full is not None:
                            if not await self._send_batch(group, peer, full):
                                return
                            sent += len(full)
                rest = batcher.flush()
                if rest is not None and await self._send_batch(group, peer, rest):
                    sent += len(rest)
        finally:
            if self._sessions.get((peer, group.id)) is scope:
                del self._sessions[(peer, group.id)]
            if sent:
                log.info("sync: sent %d event(s) of group %s to %s", sent,
                         self.service._label(group), short_id(peer))

    def _first_position(self, group: Group, theirs: dict[PeerId, int]) -> int:
        """The store position to stream from: just before the first event they lack.

        Each author's events are stored in seq order (delivery is per-author contiguous),
        so everything they lack of author A is at or after A's event ``theirs[A] + 1``:
        a session costs what the peer lacks, not the length of the whole history.
        """
        start = None
        for author, seq in group.core.frontier.items():
            have = theirs.get(author, 0)
            if seq > have:
                pos = self.service.store.position(group.id, author, have + 1)
                if pos is None:
                    return 0  # not stored (should not happen): read from the start
                start = pos if start is None else min(start, pos)
        return 0 if start is None else start - 1

    async def _send_batch(
        self, group: Group, peer: PeerId, batch: list[tuple[EventId, bytes, PeerId, Kind]]
    ) -> bool:
        conn = self.service.node.connections.get(peer)
        if conn is None:
            return False
        copies = []
        if group.core.mode == "pairwise":
            for event_id, _, author, kind in batch:
                if kind is Kind.MESSAGE and author == self.service.me:
                    blob = self.service.store.copy(event_id, peer)
                    if blob is not None:
                        copies.append((event_id, blob))
        message = EventsMessage(group.id, tuple(raw for _, raw, _, _ in batch), tuple(copies),
                                sync=True)
        last = batch[-1][0]
        group.relay_waiters[last] = group.relay_waiters.get(last, 0) + 1  # expect its ack
        try:
            return await self._await_ack(group, peer, conn, message, last)
        finally:
            group.relay_waiters[last] -= 1
            if not group.relay_waiters[last]:  # nobody waits on it: keep memory flat
                del group.relay_waiters[last]
                group.relay_acks.pop(last, None)

    async def _await_ack(
        self, group: Group, peer: PeerId, conn: PeerConnection, message: EventsMessage,
        last: EventId,
    ) -> bool:
        if not conn.send_nowait(encode_message(message)):
            return False
        with trio.move_on_after(ACK_TIMEOUT) as timeout:
            await self.service.wait_until(
                lambda: peer in group.acked.get(last, {})
                or peer in group.relay_acks.get(last, ())
                or peer not in self.service.node.connections
            )
        if timeout.cancelled_caught:
            log.info("sync: %s did not acknowledge a batch of group %s; stopping for now",
                     short_id(peer), self.service._label(group))
            return False
        return peer in self.service.node.connections
