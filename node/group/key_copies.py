"""Sealed sender-key copies: who gets which, who holds them for whom (pure).

Theory of operation
-------------------
A committed SENDER_KEY event (docs/protocol.md section 13) carries no key: it
commits to the chain state, and each recipient's sealed copy travels beside the
event, in the ``cp`` field of the ``events`` message that brings the event to
that recipient. So every member receives the event, but only its own copy: a
rotation costs O(N) bytes instead of O(N^2).

**The author** keeps every recipient's copy (``own_copies``, persisted) and
sends a member its copy whenever it pushes the event to it (fanout, outbox,
invitation, sync batches). A member that cannot read one of our messages (it
says ``unread``), or whose copy failed, gets our SENDER_KEYs of that epoch with
its copy pushed once more: once per channel, since a member says ``unread`` again
for what it still cannot read whenever its channel to us comes up (the push may
have been lost with a dropped channel).

**Copies held for others.** A member the author has no channel to when it
makes the event must not depend on meeting the author again: the author hands
that member's copy to ``HOLDERS`` members it does reach (the next ones after
the recipient in peer-id order, so the load spreads), as three-element ``cp``
entries, and holds it itself as they do. A holder keeps such copies for a
current member, within ``HELD_BYTES`` per group (first come; in memory only,
so a restart forgets them and the author's stored copies stay the source).
It pushes the event with the copy to the recipient at once if it has a
channel to it, and whenever one comes up, until the recipient acknowledges
the event to it; and whenever it sends the event to anyone else
(a sync batch), the copies it holds for others go along, so they cross a
partition with the event (the receiver holds them in turn). A copy is only
ever held for a member the author could not reach, so this costs nothing in
a connected group; where it does, each transfer of the event carries at most
one entry per unreachable recipient, as the older form carried one sealed key
per recipient inside every copy of the event.

**Relays** (``node.group.relaying``) are the exception: whatever we send a
relay of the group carries every recipient's copy we have (``copies_for_relay``),
since it holds them for members who are offline.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from typing import Any

from node.group.delivery import Delivery
from node.group.events import Event, EventId, Kind
from node.group.member_io import Events
from node.group.member_state import BATCH_BYTES
from node.ids import PeerId, short_id
from node.wire.messages import MAX_COPIES, MAX_EVENTS

#: How many reachable members the author hands an unreachable recipient's copy to.
HOLDERS = 2
#: Bytes of copies a member holds for others, per group (each entry also counts
#: ``HELD_ENTRY`` for its ids): about 1,700 sealed keys.
HELD_BYTES = 256 * 1024
HELD_ENTRY = 64

#: (event id, recipient, sealed copy)
HeldCopy = tuple[EventId, PeerId, bytes]
#: What one such entry adds to a message beside the copy itself (its ids, framing).
COPY_FRAMING = 40


def within(held: Sequence[HeldCopy], room: int) -> tuple[tuple[HeldCopy, ...], bool]:
    """The first of ``held`` that fit one message: ``room`` bytes (each entry with
    ``COPY_FRAMING``) and ``MAX_COPIES`` entries; and whether they all did."""
    for i, (_, _, blob) in enumerate(held):
        room -= len(blob) + COPY_FRAMING
        if room < 0 or i >= MAX_COPIES:
            return tuple(held[:i]), False
    return tuple(held), True


class KeyCopies(Delivery):
    # -- the author: whom to hand an unreachable member's copy to --

    def holders_for(self, event: Event, copies: dict[PeerId, bytes]
                    ) -> dict[PeerId, tuple[HeldCopy, ...]]:
        """Per reachable member, the copies of ``event`` it should hold for recipients
        we have no channel to (none unless ``event`` is a SENDER_KEY)."""
        if event.kind is not Kind.SENDER_KEY:
            return {}
        away = sorted(m for m in copies if m not in self.connected)
        self.keep_held(event, [(m, copies[m]) for m in away])  # we hold them too
        reach = sorted(m for m in self.connected
                       if m != self.me and m in self.core.state.members)
        out: dict[PeerId, list[HeldCopy]] = {}
        for member in away if reach else ():
            start = bisect.bisect(reach, member)
            for k in range(min(HOLDERS, len(reach))):
                holder = reach[(start + k) % len(reach)]
                out.setdefault(holder, []).append((event.id, member, copies[member]))
        return {h: tuple(held[:MAX_EVENTS - 1]) for h, held in out.items()}  # (one is its own)

    # -- a holder --

    def hold(self, sender: PeerId, held: tuple[HeldCopy, ...]) -> None:
        """Keep the copies ``sender`` handed us for others (see the module docstring)."""
        members = self.core.state.members
        full = 0
        for event_id, recipient, blob in held:
            event = self.core.get(event_id)
            if (event is None or event.kind is not Kind.SENDER_KEY or recipient == self.me
                    or recipient not in members or recipient in self.held.get(event_id, {})):
                continue
            if not self.keep_held(event, [(recipient, blob)]):
                full += 1
                continue
            self.send(recipient, Events((event,), ((event_id, blob),), sync=True), "sync")
        if full:
            self.warn(f"group {self.label}: not holding {full} sender-key copies for others "
                      f"from {short_id(sender)}: {HELD_BYTES} bytes held already",
                      level=logging.INFO)

    def room_for(self, cost: int) -> bool:
        """May we hold ``cost`` more bytes of copies for others (``HELD_BYTES``)?"""
        return self.held_bytes + cost <= HELD_BYTES

    def keep_held(self, event: Event, copies: list[tuple[PeerId, bytes]]) -> bool:
        """Hold ``copies`` of ``event`` for their recipients, while ``room_for`` them
        (False if they did not all fit)."""
        for recipient, blob in copies:
            cost = len(blob) + HELD_ENTRY
            if not self.room_for(cost):
                return False
            self.held.setdefault(event.id, {})[recipient] = blob
            self.held_bytes += cost
        return True

    def pass_on(self, peer: PeerId) -> None:
        """Push ``peer`` the events whose copy we hold for it, with the copy."""
        ids = [event_id for event_id, held in self.held.items() if peer in held]
        if not ids or peer not in self.connected:
            return
        if peer not in self.core.state.members:  # no longer a member: it gets no key
            self.drop_held(peer, ids)
            return
        for start in range(0, len(ids), MAX_EVENTS):
            chunk = [e for e in (self.core.get(i) for i in ids[start:start + MAX_EVENTS])
                     if e is not None]
            copies = tuple((e.id, self.held[e.id][peer]) for e in chunk)
            self.send(peer, Events(tuple(chunk), copies, sync=True), "sync")

    def drop_held(self, peer: PeerId, ids: list[EventId] | tuple[EventId, ...]) -> None:
        for event_id in ids:
            held = self.held.get(event_id)
            blob = None if held is None else held.pop(peer, None)
            if blob is not None:
                self.held_bytes -= len(blob) + HELD_ENTRY
            if held is not None and not held:
                del self.held[event_id]

    # -- hooks into delivery --

    def copies_for(self, peer: PeerId, batch: list[Event]) -> tuple[
            tuple[tuple[EventId, bytes], ...], tuple[HeldCopy, ...]]:
        """Our pairwise and sender-key copies for ``peer``, the copies we hold for it, and
        those we hold for others (they travel on with the event, within ``MAX_EVENTS``)."""
        if peer in self.core.state.relays:
            return (), self.copies_for_relay(batch)
        copies: list[tuple[EventId, bytes]] = []
        others: list[HeldCopy] = []
        for event in batch:
            if event.kind is not Kind.MESSAGE and event.kind is not Kind.SENDER_KEY:
                continue
            blob = self.own_copies.get(event.id, {}).get(peer)
            held = self.held.get(event.id, {})
            blob = blob if blob is not None else held.get(peer)
            if blob is not None:
                copies.append((event.id, blob))
            others.extend((event.id, r, b) for r, b in held.items() if r != peer)
        return tuple(copies), tuple(others[:max(0, MAX_EVENTS - len(copies))])

    def copies_for_relay(self, batch: list[Event]) -> tuple[HeldCopy, ...]:
        """A relay holds copies for every member: ours (every recipient's) and those we
        hold for others, addressed by recipient (at most ``MAX_COPIES`` per message, and
        with the events within ``BATCH_BYTES``: the rest reach their recipients from the
        author, who sends a copy again on ``unread``)."""
        held = [(event.id, recipient, blob) for event in batch
                if event.kind is Kind.MESSAGE or event.kind is Kind.SENDER_KEY
                for source in (self.own_copies.get(event.id, {}), self.held.get(event.id, {}))
                for recipient, blob in sorted(source.items())]
        return within(held, BATCH_BYTES - sum(len(e.raw) for e in batch))[0]

    def flush(self, peer: PeerId) -> None:
        super().flush(peer)
        self.pass_on(peer)

    def on_ack(self, sender: PeerId, ack: Any) -> None:
        """(``ack``: an ``Ack``, or a cumulative one with ``upto``.) A recipient that
        acknowledges an event we hold a copy for has it, with the copy we pushed it."""
        super().on_ack(sender, ack)
        if not self.held:
            return
        upto = getattr(ack, "upto", None)
        if upto is not None:
            frontier = dict(upto)
            self.drop_held(sender, [i for i, held in self.held.items() if sender in held and (
                (e := self.core.get(i)) is not None and frontier.get(e.author, 0) >= e.seq)])
        elif ack.kind == "ack":
            self.drop_held(sender, ack.ids)

    def on_unreadable(self, sender: PeerId, ids: tuple[EventId, ...]) -> None:
        """``sender`` cannot read these events of ours: for a private message, or a
        SENDER_KEY whose copy failed, push it (once per channel: ``forget_resent``) our
        SENDER_KEYs of that epoch with its sealed copy (relayed to it by a member that
        held no copy for it)."""
        super().on_unreadable(sender, ids)
        epochs = set()
        for event_id in ids:
            event = self.core.get(event_id)
            if event is not None and event.author == self.me and (
                    event.kind is Kind.SENDER_KEY
                    or (event.kind is Kind.MESSAGE and self.core.mode == "private")):
                epochs.add(event.epoch)
        again = []
        for event_id, copies in self.own_copies.items():
            event = self.core.get(event_id)
            if (sender in copies and event is not None and event.kind is Kind.SENDER_KEY
                    and event.epoch in epochs and (event_id, sender) not in self.keys_resent):
                self.keys_resent.add((event_id, sender))
                again.append(event)
        if again:
            self.push(sender, sorted(again, key=lambda e: e.seq))
