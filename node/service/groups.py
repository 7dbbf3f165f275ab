"""``GroupService``: runs the member cores of a node's groups (trio driver).

The protocol itself is in ``node.group.member`` (pure, shared with the
simulator). This driver only moves bytes, time and rows:

* it turns peer messages into ``Received`` inputs, channel changes into
  ``PeerUp``, the clock into ``Tick`` and ``Announce``, and user operations
  into commands, reading the wall clock and passing it in;
* it runs each input's effects: every ``Persist`` in **one** store
  transaction, then the sends through the per-peer queues (``send_nowait``:
  a slow member never holds up the others), then watchers, log lines and
  timers. Acknowledgement receipts of our events are the exception: they are
  written in one transaction every ``DELIVERY_SAVE_INTERVAL`` (losing the
  last moment of them in a crash only means a member is sent those events
  again);
* it holds events of groups we are not in, in a small bounded side core: if
  they make us a member (someone added us), the group is adopted and stored,
  otherwise they are dropped with one log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from node.errors import ConfigError, GroupError, RemoteProtocolError
from node.group.content import Content, decode_content
from node.group.events import Event, EventError, EventId, GroupId, Kind, decode_event
from node.group.invitations import Invitations
from node.group.member import Member
from node.group.member_io import (
    Ack,
    Announce,
    Events,
    Got,
    Payload,
    PeerDown,
    PeerUp,
    Received,
    Tick,
    Typing,
    Vector,
    Warn,
)
from node.group.relaying import Relay
from node.group.state import GroupCore
from node.ids import PeerId, short_id
from node.logs import RateLimitedLog, clip, reason_key
from node.service.commands import GroupCommands
from node.service.files import FileService
from node.service.incoming import decode_events
from node.service.open_groups import OpenGroups
from node.service.peer_names import PeerNames
from node.service.watchers import Notice, TypingNotice
from node.store.db import GroupRow, Store
from node.wire.messages import (
    AckMessage,
    ChunkMessage,
    GotMessage,
    NoChunkMessage,
    TypingMessage,
    VectorMessage,
    WantMessage,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    from node.service.links import PeerLink, PeerLinks

log = logging.getLogger(__name__)
peer_log = RateLimitedLog(log)  # lines a peer can repeat: limited per peer and reason

#: (peer, group) pairs we asked for a group we do not run (``_ask_unknown``), at most.
ASKED_UNKNOWN = 256

#: A group as this node runs it (the member core; kept under this name for the API).
Group = Member

__all__ = ["Group", "GroupError", "GroupService", "Notice", "TypingNotice"]


class GroupService(GroupCommands):
    def __init__(self, node: PeerLinks, store: Store) -> None:
        super().__init__(node, store)
        # events of groups we are not in (yet); a relay node adopts those it relays
        self.invitations = Invitations(self.me, relay=node.config.relay)
        self.open: OpenGroups = OpenGroups(self)  # open groups: announcing, joining, bans
        self.names = PeerNames(store)  # what peers called themselves, across restarts
        self._asked_unknown: dict[tuple[PeerId, GroupId], None] = {}  # (a bounded FIFO)
        self._load()
        self.files = FileService(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work: anti-entropy, timers, coalesced receipts and deliveries."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receipts)
            nursery.start_soon(self._save_deliveries)
            nursery.start_soon(self._announce)
            nursery.start_soon(self._timers)
            if self.files is not None:
                await nursery.start(self.files.run)
            task_status.started()

    def _load(self) -> None:
        for row in self.store.groups():
            member = self._new_member(GroupCore(row.id), row.joined_at)
            rows = []
            own_copies: dict[EventId, dict[PeerId, bytes]] = {}
            copies: dict[EventId, bytes] = {}
            held: dict[EventId, dict[PeerId, bytes]] = {}  # a relay's, for members
            # pairwise messages and committed sender keys have copies
            copied = {"pairwise": int(Kind.MESSAGE), "private": int(Kind.SENDER_KEY)}
            for ev in self.store.events(row.id):
                content: Content | None = None
                if ev.content is not None:
                    try:
                        content = decode_content(ev.content)
                    except EventError as exc:
                        log.warning("stored content of %s is unreadable: %s",
                                    ev.id.hex()[:12], exc)
                rows.append((decode_event(ev.raw), ev.received_at, ev.text, content))
                if ev.kind != copied.get(row.mode):
                    continue
                for recipient, blob in self.store.copies(ev.id).items():
                    if ev.author == self.me:
                        own_copies.setdefault(ev.id, {})[recipient] = blob
                    elif recipient == self.me:
                        copies[ev.id] = blob
                    else:
                        held.setdefault(ev.id, {})[recipient] = blob
            effects = member.restore_from(
                rows, self.store.own_key(row.id), self.store.own_history(row.id),
                self.store.peer_keys(row.id), self.store.deliveries(row.id), copies,
                own_copies, self.store.read_marks(row.id))
            if isinstance(member, Relay):
                if self.me in member.core.state.members:
                    raise ConfigError(
                        f"this data directory holds group {member.label}, of which this node "
                        "is a member: a relay (--relay) needs a data directory of its own "
                        "(--data DIR)")
                member.restore_held(held)
            member.notify_muted = self.store.notify_muted(row.id)
            self.groups[row.id] = member
            self.run_effects(member, effects)  # a delete is final, also after a crash
        if self.groups:
            log.info("loaded %d group(s) from %s", len(self.groups), self.store.path)

    async def _announce(self) -> None:
        """Every ``sync_interval``, exchange version vectors with connected members."""
        while True:
            await trio.sleep(self.node.config.sync_interval)
            for group in list(self.groups.values()):
                self.handle(group, Announce())

    async def _receipts(self) -> None:
        """Send read receipts at most every ``receipt_interval``: one small event per burst.

        The same beat ends timed mutes whose end our clock has passed (as an admin).
        """
        while True:
            await trio.sleep(self.node.config.receipt_interval)
            self._flush_receipts()
            self.expire_mutes(time.time())
            self.open.expire_bans(time.time())

    def _flush_receipts(self) -> None:
        for group in list(self.groups.values()):
            if group.unread_receipt:
                self.handle(group, Tick())

    def adopt(self, core: GroupCore, sender: PeerId, events: Sequence[Event],
              copies: dict[EventId, bytes]) -> Member:
        """Start running a group someone else made (we were added, or we joined it)."""
        now = time.time()
        group = self._new_member(GroupCore(core.group_id), now)
        with self.store.transaction():
            self.store.add_group(GroupRow(core.group_id, core.state.name, core.state.mode, now))
        self.groups[core.group_id] = group
        # its own transaction: a DELETE in the history checkpoints the WAL after it
        self.handle(group, Received(sender, Events(tuple(events), tuple(copies.items()))), now)
        return group

    async def on_message(self, conn: PeerLink, data: bytes) -> None:
        """Handle one application message from a peer (the node's message hook)."""
        sender = conn.info.peer_id
        try:
            message = decode_message(data)
        except RemoteProtocolError as exc:
            if self.open.on_raw(conn, data):  # asking for, or refusing, an open group
                return
            peer_log.warning((sender, reason_key(str(exc))), "dropping message from %s: %s",
                             short_id(sender), clip(str(exc)))
            return
        if self.open.on_message(sender, message):  # the history of a group we are joining
            return
        if isinstance(message, WantMessage | ChunkMessage | NoChunkMessage):
            if self.files is not None:
                await self.files.on_message(conn, message)
            return
        payload: Payload
        if isinstance(message, AckMessage):
            payload = Ack(message.ids, message.kind)
        elif isinstance(message, GotMessage):
            payload = Got(message.upto)
        elif isinstance(message, VectorMessage):
            if message.group not in self.groups:
                self._ask_unknown(conn, message)
                return
            payload = Vector(message.vector, message.want)
        elif isinstance(message, TypingMessage):
            payload = Typing()
        else:
            events = decode_events(sender, message.events)
            group = self.groups.get(message.group)
            if group is None:
                self._maybe_adopt(sender, message.group, events, message.copies)
                return
            payload = Events(tuple(events), message.copies, message.sync, message.held,
                             message.fanout)
        group = self.groups.get(message.group)
        if group is not None:
            self.handle(group, Received(sender, payload))

    def _ask_unknown(self, conn: PeerLink, message: VectorMessage) -> None:
        """A peer holds events of a group we do not run: ask it (once per peer and group,
        ``ASKED_UNKNOWN`` remembered) for all of them, with an empty vector. If they make
        us a member (we were added while away) or, on a relay node, its relay, the group
        is adopted from them (``node.group.invitations``); a member that meets only a relay
        thus learns of a group it was added to while offline (the Mailbox case)."""
        key = (conn.info.peer_id, message.group)
        if not message.vector or message.want or key in self._asked_unknown:
            return
        self._asked_unknown[key] = None
        while len(self._asked_unknown) > ASKED_UNKNOWN:
            del self._asked_unknown[next(iter(self._asked_unknown))]
        conn.send_nowait(encode_message(VectorMessage(message.group, (), want=True)))

    def deliver(self, group: Member, events: Sequence[Event], sender: PeerId) -> None:
        """Deliver events we got some other way (an open group's history) as if received."""
        self.handle(group, Received(sender, Events(tuple(events))))

    def _maybe_adopt(
        self, sender: PeerId, group_id: GroupId, events: list[Event],
        copies: tuple[tuple[EventId, bytes], ...],
    ) -> None:
        outcome = self.invitations.receive(sender, group_id, events, copies)
        if isinstance(outcome, Warn):
            peer_log.log((sender, "not in"), outcome.level, "%s", outcome.text)
            return
        config = self.node.config
        if config.relay and len(self.groups) >= config.relay_max_groups:
            peer_log.warning((sender, "relay full"), "not relaying group %s for %s: this "
                             "relay already relays %d groups (--relay-max-groups)",
                             outcome.core.state.name, short_id(sender), len(self.groups))
            return
        self.adopt(outcome.core, sender, outcome.events, dict(outcome.copies))
        log.info("%s group %s by %s", "relaying" if self.node.config.relay else "added to",
                 outcome.core.state.name, short_id(sender))

    def peer_connected(self, peer: PeerId) -> None:
        """A channel to ``peer`` came up: push what it has not acknowledged, then sync."""
        for group in list(self.groups.values()):
            self.handle(group, PeerUp(peer))
        if self.files is not None:
            self.files.peer_connected(peer)


    def peer_disconnected(self, peer: PeerId) -> None:
        """The channel to ``peer`` is gone: the members stop streaming to it, and what it
        alone sent for groups we are not in is forgotten."""
        for group in list(self.groups.values()):
            self.handle(group, PeerDown(peer))
        dropped = self.invitations.peer_gone(peer)
        if dropped:
            log.info("forgot events of %d group(s) we are not in, sent by %s (gone)",
                     dropped, short_id(peer))
