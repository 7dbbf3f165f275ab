"""The relay's core: one group as an untrusted relay runs it (pure).

Theory of operation
-------------------
A relay is a peer an admin designated with a RELAY event (``Membership.relays``):
it stores and forwards the group's events and can neither read nor post. It is
never a member, so no member ever seals it a sender key, makes it a pairwise
copy or a HISTORY, and every member rejects an event it authors ("author is not
a member"). ``Relay`` is the member core (``node.group.member.Member``) with
everything that reads or writes content taken out:

* **Log.** Its own ``GroupCore`` checks every event as a member's does
  (signature, causal order, membership): it never stores or forwards a forgery.
  Each delivered event is persisted (``SaveEvent`` without text or content)
  before anything is acknowledged or relayed (a driver runs ``Persist`` first).
* **Sync.** It answers vectors, streams sessions and pulls exactly like a
  member (``node.group.sessions``): a member that reconnects only to the relay
  gets everything it lacks (the Mailbox case). Members treat a relay as a sync
  peer (``Pulling.shared``) but never count its receipts as delivery.
* **Copies.** Whatever a member sends the relay carries every recipient's copy
  (pairwise ciphertexts, sealed SENDER_KEY copies) as ``held`` entries
  addressed by recipient; the relay keeps those for current members
  (persisted with ``SaveCopy``) and sends a member only its own, with the
  events it streams or fans out to it. A copy goes once the member
  acknowledges the event to the relay, when it departs, or after ``expiry``.
* **Fanout.** An ``Events`` with ``fanout`` set (server-side fanout: an author
  whose node uses ``Settings.fanout == "relay"`` sent it one copy) is stored,
  then pushed to every member the relay is connected to except its sender and
  author, each with its own copy. Without the flag the relay only stores (and
  remembers the event for ``LATE_FAN_WINDOW``: if its author's flagged copy
  comes meanwhile, the relay pushes it on then, once).
* **Budget and expiry.** At most ``budget`` bytes per group (events plus held
  copies): to take events that would go over it, held copies are forgotten,
  oldest first; events that still would go over it are refused (not stored, not
  acknowledged, not relayed; the members go on syncing with each other), and
  copies that would go over it are not kept. Held copies older than ``expiry`` seconds
  are dropped (on ``Tick`` and ``Announce``). The signed log itself is kept
  whole while the group is relayed: causal delivery makes a log with a hole
  useless to a member (it can deliver nothing after the hole), so events are
  not expired one by one.
* **Commands** are refused (``Refused(RELAY_REFUSAL)``), but for a node's
  periodic chores (``ExpireMutes``, ``MarkRead``: no effects); an undesignated relay
  (a RELAY off, or never designated) says so once with ``SetLeft(True)`` and
  stops announcing; members stop sending it anything new.

How a driver creates and drives it
----------------------------------
Exactly like a ``Member`` (same inputs, same effects, run the same way)::

    relay = Relay(identity, GroupCore(group_id), rng, joined_at=now,
                  budget=DEFAULT_BUDGET, expiry=DEFAULT_EXPIRY)
    relay.connected = set(...)            # or a Links view, as for a member
    effects = relay.handle(Received(sender, Events(events, copies, sync, held,
                                                    fanout)), now)
    effects = relay.handle(PeerUp(peer), now)   # PeerDown, Tick, Announce as usual

It learns the group from the log an admin pushes it after designating it: a
node keeps events of groups it does not run in ``Invitations(me, relay=True)``,
which answers ``Adopt`` once they make it a relay (as it does for a member once
they make it a member); the driver then creates the ``Relay`` and hands it those
events as one ``Received``. A restart: ``restore_from`` (as a member, with no
keys) then ``restore_held`` with the stored copies by event.

The member side: an author's node with ``Settings(fanout="relay")`` sends each
new event of its own as ``Events((event,), held=<every recipient's copy>,
fanout=True)`` to the first connected relay in peer-id order, and nothing to
the members; with no relay connected, or with ``fanout="client"``, it pushes to
every connected member as before and also sends connected relays the event
with every copy (unflagged: they only store). A member that gets live events
from a relay acknowledges them to the relay and to their author
(``Delivery.ack``), so delivery marks are the same with either fanout.
``relay.fanned`` counts the events it pushed on, ``relay.fanout_sends`` the
messages it sent doing so, ``relay.stats()`` sums up what it holds.
"""

from __future__ import annotations

import logging
from typing import Any

from node.group import commands as C
from node.group.events import Event, EventId, Kind
from node.group.key_copies import HeldCopy
from node.group.member import Member
from node.group.member_io import (
    Announce,
    Effect,
    Events,
    HistoryWanted,
    Input,
    PeerDown,
    PeerUp,
    Received,
    Refused,
    SaveCopy,
    SaveEvent,
    SendMany,
    SetLeft,
    Tick,
)
from node.group.state import Delivered, MembershipChanged
from node.ids import PeerId, short_id
from node.wire.messages import MAX_COPIES

#: Default bytes a relay keeps per group (events plus held copies), and how long it
#: holds a copy for an offline member (seconds).
DEFAULT_BUDGET = 64 * 1024 * 1024
DEFAULT_EXPIRY = 7 * 24 * 3600.0
RELAY_REFUSAL = ("this node is a relay: it stores and forwards the group's events but "
                 "cannot post or change the group")

_INPUTS = (Received, PeerUp, PeerDown, Tick, Announce, HistoryWanted)
#: Flagged events the causal buffer may hold for a later fanout, and the bytes of copies
#: kept with them (beyond either, such an event is stored when it comes out but reaches
#: the members only by their sync).
MAX_FAN_PENDING = 1024
MAX_FAN_PENDING_BYTES = 4 * 1024 * 1024
#: Events stored unflagged (by sync, or a client-side push) are remembered this long, at
#: most LATE_FAN_MAX of them: if their author's flagged copy comes meanwhile, they are
#: fanned out then (members relay-fed by us wait for them; ``pulling.RELAY_WAIT``).
LATE_FAN_WINDOW = 10.0
LATE_FAN_MAX = 1024
#: Commands a node's beats send every group (not a user's): a relay has none to do.
_HOUSEKEEPING = (C.ExpireMutes, C.MarkRead)


class Relay(Member):
    """One group as its relay runs it (see the module docstring)."""

    def __init__(self, *args: Any, budget: int = DEFAULT_BUDGET,
                 expiry: float = DEFAULT_EXPIRY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.expiry = expiry
        self.log_bytes = 0  # bytes of the events stored
        self.held_at: dict[EventId, float] = {}  # when we took each event's copies
        self.refused_events = 0  # events refused for want of budget
        self.fanned = 0  # events pushed on (server-side fanout)
        self.fanout_sends = 0  # messages sent doing so
        self.was_designated = False
        #: Flagged events the causal buffer holds (their clock names an event we lack):
        #: who sent them and their copies, to fan out when they are delivered.
        self.fan_pending: dict[EventId, tuple[PeerId, tuple[HeldCopy, ...]]] = {}
        self.fan_pending_bytes = 0
        #: Events stored from an unflagged message lately, not fanned out: when.
        self.unfanned: dict[EventId, float] = {}

    @property
    def designated(self) -> bool:
        return self.me in self.core.state.relays

    def stored_bytes(self) -> int:
        return self.log_bytes + self.held_bytes

    def room_for(self, cost: int) -> bool:
        """Copies for members count against the group's budget, with the events."""
        return self.stored_bytes() + cost <= self.budget

    # -- the one entry point --

    def handle(self, input: Input | C.Command, now: float) -> list[Effect]:
        if isinstance(input, _HOUSEKEEPING):
            return []  # a node's periodic chores: nothing for a relay to do
        if not isinstance(input, _INPUTS):
            self.now = now
            return [Refused(RELAY_REFUSAL)]
        return super().handle(input, now)

    def _dispatch(self, input: Input | C.Command) -> None:
        if isinstance(input, Tick | Announce):
            self.expire_held()
            if isinstance(input, Announce) and not self.designated:
                return  # undesignated: quiet (members ignore us anyway)
        super()._dispatch(input)

    # -- receiving: store, hold, fan out; never read --

    def receive(self, sender: PeerId, message: Events) -> list[EventId]:
        new = [e for e in message.events if not self.core.has(e.author, e.seq)]
        size = sum(len(e.raw) for e in new)
        if new and self.stored_bytes() + size > self.budget:
            self.make_room(self.stored_bytes() + size - self.budget)
        if new and self.stored_bytes() + size > self.budget:
            self.refused_events += len(new)
            self.warn(f"relay: group {self.label} is at its budget of {self.budget} bytes: "
                      f"refusing {len(new)} event(s) from {short_id(sender)}")
            return []
        before = self.core.delivered_count()
        # (a member leaving hears of it too: the members before count)
        audience = set(self.core.state.members) if message.fanout else set()
        designated = self.designated
        stored = super().receive(sender, message)
        delivered = self.core.delivered_since(before)
        if message.fanout and designated and sender in audience:
            ours = {e.id for e in message.events}
            late = [e for e in message.events if e.author == sender and self.late(e.id)]
            self.fan_out(sender, late + [e for e in delivered if e.id in ours],
                         audience | set(self.core.state.members))
            self.keep_pending(sender, message, ours - {e.id for e in delivered})
        elif designated:
            self.remember_unfanned(delivered)
        if self.fan_pending:  # buffered flagged events this input let out
            for event in delivered:
                pending = self.fan_pending.pop(event.id, None)
                if pending is not None:
                    self.fan_pending_bytes -= sum(len(blob) for _, _, blob in pending[1])
                    if self.designated:
                        self.hold(pending[0], pending[1])
                        self.fan_out(pending[0], [event], set(self.core.state.members))
        return stored

    def remember_unfanned(self, delivered: list[Event]) -> None:
        """Remember events stored from an unflagged message: a member that pulled an
        author's event before we had it may hand it to us by sync just before the
        author's flagged copy comes, which would otherwise be a duplicate, never fanned
        out, and the members it was for would wait ``RELAY_WAIT`` for it."""
        unfanned = self.unfanned
        for event in delivered[-LATE_FAN_MAX:]:
            unfanned[event.id] = self.now
        while unfanned:  # oldest first (insertion order): amortised O(1) per event
            oldest = next(iter(unfanned))
            if len(unfanned) <= LATE_FAN_MAX and self.now - unfanned[oldest] < LATE_FAN_WINDOW:
                break
            del unfanned[oldest]

    def late(self, event_id: EventId) -> bool:
        """Whether ``event_id`` came unflagged less than LATE_FAN_WINDOW ago, not fanned
        out yet (it will be now)."""
        at = self.unfanned.pop(event_id, None)
        return at is not None and self.now - at < LATE_FAN_WINDOW

    def keep_pending(self, sender: PeerId, message: Events, waiting: set[EventId]) -> None:
        """Remember the flagged events of ``message`` the causal buffer kept (it delivers
        them with a later input, which carries no flag), within bounds."""
        for event in message.events:
            if event.id not in waiting or event.id in self.fan_pending \
                    or self.core.get(event.id) is not None \
                    or len(self.fan_pending) >= MAX_FAN_PENDING:
                continue
            held = tuple(h for h in message.held if h[0] == event.id)
            size = sum(len(blob) for _, _, blob in held)
            if self.fan_pending_bytes + size > MAX_FAN_PENDING_BYTES:
                held, size = (), 0
            self.fan_pending[event.id] = (sender, held)
            self.fan_pending_bytes += size

    def store_delivered(self, delivered: Delivered) -> list[Event]:
        event = delivered.event
        self.log_bytes += len(event.raw)  # (counted before the copies that come with it)
        self.out.append(SaveEvent(event, self.now, None, None))
        self.texts[event.id] = None
        self.joined_at[event.id] = self.now
        return []

    def fan_out(self, sender: PeerId, events: list[Event], audience: set[PeerId]) -> None:
        """Push ``events`` (just stored) to every connected member of ``audience`` but
        their sender and author, each with its own copies (server-side fanout)."""
        if not events:
            return
        plain: list[PeerId] = []
        authors = {e.author for e in events}
        for member in sorted(audience):
            if member in (sender, self.me) or member not in self.connected \
                    or (len(authors) == 1 and member in authors):
                continue
            copies = tuple((e.id, self.held[e.id][member]) for e in events
                           if member in self.held.get(e.id, {}))
            if copies:
                self.send(member, Events(tuple(events), copies), "message")
                self.fanout_sends += 1
            else:
                plain.append(member)
        if plain:
            self.out.append(SendMany(tuple(plain), Events(tuple(events)), "message"))
            self.fanout_sends += len(plain)
        self.fanned += len(events)

    def hold(self, sender: PeerId, held: tuple[HeldCopy, ...]) -> None:
        """Keep every recipient's copy a member sent us, within the budget."""
        members = self.core.state.members
        full = 0
        for event_id, recipient, blob in held:
            event = self.core.get(event_id)
            if (event is None or event.kind not in (Kind.MESSAGE, Kind.SENDER_KEY)
                    or recipient not in members or recipient in self.held.get(event_id, {})):
                continue
            if not self.keep_held(event, [(recipient, blob)]):
                full += 1
                continue
            self.held_at.setdefault(event_id, self.now)
            self.out.append(SaveCopy(event_id, recipient, blob))
        if full:
            self.warn(f"relay: group {self.label} is at its budget of {self.budget} bytes: "
                      f"not holding {full} copies from {short_id(sender)}", level=logging.INFO)

    def copies_for(self, peer: PeerId, batch: list[Event]) -> tuple[
            tuple[tuple[EventId, bytes], ...], tuple[HeldCopy, ...]]:
        """A member gets only its own copies; another relay every copy we hold."""
        if peer in self.core.state.relays:
            return super().copies_for(peer, batch)
        copies = [(e.id, self.held[e.id][peer]) for e in batch
                  if peer in self.held.get(e.id, {})]
        return tuple(copies[:MAX_COPIES]), ()

    def drop_held(self, peer: PeerId, ids: list[EventId] | tuple[EventId, ...]) -> None:
        super().drop_held(peer, ids)
        for event_id in ids:
            if event_id not in self.held:
                self.held_at.pop(event_id, None)

    def forget_copies(self, event_id: EventId) -> None:
        for recipient in list(self.held.get(event_id, {})):
            self.drop_held(recipient, [event_id])
        self.held_at.pop(event_id, None)

    def make_room(self, need: int) -> None:
        """Free ``need`` bytes for events by forgetting held copies, oldest first (an
        event without its copy can still be read once its author sends the copy; a
        copy without its event is of no use)."""
        freed = 0
        for event_id, _ in sorted(self.held_at.items(), key=lambda kv: kv[1]):
            if freed >= need:
                break
            before = self.held_bytes
            self.forget_copies(event_id)
            freed += before - self.held_bytes

    def expire_held(self) -> None:
        """Forget the copies held longer than ``expiry``."""
        old = [i for i, at in self.held_at.items() if self.now - at > self.expiry]
        for event_id in old:
            self.forget_copies(event_id)
        if old:
            self.warn(f"relay: group {self.label}: copies of {len(old)} event(s) expired",
                      level=logging.INFO)

    def restore_held(self, held: dict[EventId, dict[PeerId, bytes]]) -> None:
        """After a restart: the copies we stored for members (``restore_from`` first),
        as taken when their event was received (for expiry), within the budget."""
        self.log_bytes = sum(len(e.raw) for e in self.core.ordered_view())
        self.was_designated = self.designated
        for event_id, copies in held.items():
            event = self.core.get(event_id)
            at = self.joined_at.get(event_id, self.now)
            for recipient, blob in copies.items():
                if (event is not None and recipient in self.core.state.members
                        and self.keep_held(event, [(recipient, blob)])):
                    self.held_at.setdefault(event_id, at)

    # -- membership: designation, departures --

    def membership_changed(self, change: MembershipChanged, cause: Delivered | None) -> None:
        super().membership_changed(change, cause)
        gone = set(change.before.members) - set(self.core.state.members)
        for member in sorted(gone):  # a departed member gets no copy any more
            self.drop_held(member, [i for i, h in self.held.items() if member in h])
        if self.designated != self.was_designated:
            self.was_designated = self.designated
            self.out.append(SetLeft(not self.designated))
            what = "designated as a relay of" if self.designated else "no longer a relay of"
            self.warn(f"relay: {what} group {self.label}", level=logging.INFO)

    # -- nothing to read, nothing to report --

    def pass_on(self, peer: PeerId) -> None:
        return  # a member gets its copies with the events we stream it

    def recall_unread(self, author: PeerId) -> None:
        return

    def report_unread(self, author: PeerId) -> None:
        return

    def late_copy(self, event: Event) -> None:
        return

    def read_unwithdrawn(self, member: PeerId, cut: int) -> None:
        return

    def on_typing(self, sender: PeerId) -> None:
        return

    def stats(self) -> dict[str, int]:
        """What the relay holds and did for this group (status views, benchmarks)."""
        return {"events": self.core.delivered_count(), "bytes": self.stored_bytes(),
                "held_copies": sum(len(h) for h in self.held.values()),
                "members": len(self.core.state.members),
                "connected_members": sum(1 for m in self.core.state.members
                                         if m in self.connected),
                "refused_events": self.refused_events, "fanned": self.fanned}
