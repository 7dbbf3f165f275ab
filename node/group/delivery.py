"""Acknowledgements, the outbox, invitations and batched pushes (pure).

Theory of operation
-------------------
Our own events stay "not delivered" to a member until it acknowledges them
or a version vector it sent shows it holds them. Whenever a
member's channel comes up we push it what it has not acknowledged (the
**outbox**), so messages written while nobody was reachable go out later,
also after a restart. The member who added someone owes it the group's
history and pushes that too (**invitation**).

**Acknowledgements are cumulative.** Delivery is causal and an author's
events are delivered in seq order (``GroupCore`` delivers seq n only right
after n - 1), so what a member holds of one author is always 1..frontier: one
number per author says it all. A receiver answers with ``Got`` (author ->
frontier, for the authors of what that peer sent it) instead of one id list
per message, and coalesces: live events are acknowledged ``ACK_DELAY`` after
the first of a burst arrived (one ``Got`` per peer per window, whatever the
burst's length); a sync batch at once (its session waits for it). A vector we
send a peer covers whatever we owed it (it is our whole frontier). The
frontier is read when the ``Got`` is sent, after the driver committed every
earlier input: an acknowledgement only ever covers stored events.

The author keeps, per member, the highest seq of its own events that member
holds (``own_upto``); ``has`` answers from it in O(1). A per-id ``Ack`` (older
nodes, and the tail of a sync batch) raises it too: a member that stored our
event n holds 1..n. Each rise is persisted as one ``SaveDelivery`` row for the
top event (restart rebuilds ``own_upto`` from those rows), not one row per
event.

Catch-up travels in batches of at most ``MAX_EVENTS`` events and
``BATCH_BYTES`` bytes, flagged ``sync`` so the receiver passes the news on to
its other neighbours. A sync session (``node.group.sessions``) sends its next
batch only when the last event of the previous one is acknowledged, so live
traffic sharing the queue is never stuck behind more than one batch, leaves out
what the peer got meanwhile (by its latest vector), and spends a per-peer
byte budget (``SYNC_RATE``, ``SYNC_BURST``): out of budget, it pauses until the
bucket holds enough for the next batch.

In pairwise mode the author keeps each recipient's ciphertext
(``own_copies``) and sends it along with the event whenever it pushes it.
"""

from __future__ import annotations

import logging

from node.crypto.keys import IdentityKey
from node.group import keys as K
from node.group.bodies import Add, Receipt, Relay
from node.group.events import Event, EventId, Kind
from node.group.member_io import Ack, Events, Got, Payload, SaveDelivery, Vector, Wake
from node.group.member_state import (
    ACK_TIMEOUT,
    BATCH_BYTES,
    SYNC_BURST,
    SYNC_RATE,
    Budget,
    MemberState,
    Session,
    Settings,
)
from node.group.state import Delivered, GroupCore
from node.ids import PeerId, short_id
from node.sync.plan import Batcher, lacks
from node.wire.messages import MAX_EVENTS


def batches(events: list[Event]) -> list[list[Event]]:
    """``events`` cut into messages of at most ``MAX_EVENTS`` events and ``BATCH_BYTES``."""
    batcher: Batcher[Event] = Batcher(MAX_EVENTS, BATCH_BYTES)
    out = []
    for event in events:
        full = batcher.add(event, len(event.raw))
        if full is not None:
            out.append(full)
    rest = batcher.flush()
    if rest is not None:
        out.append(rest)
    return out


#: Live events are acknowledged this long after the first of a burst arrived: one ``Got``
#: per peer per window, however many messages the burst had.
ACK_DELAY = 0.05


class Delivery(MemberState):
    def __init__(
        self, identity: IdentityKey, core: GroupCore, rng: K.Rng, *,
        joined_at: float = 0.0, settings: Settings | None = None,
    ) -> None:
        super().__init__(identity, core, rng, joined_at=joined_at, settings=settings)
        #: Per member: the highest seq of our own events it holds (with every earlier one).
        self.own_upto: dict[PeerId, int] = {}
        #: Acknowledgements we owe, per peer: the authors whose events it sent us.
        self.owed: dict[PeerId, set[PeerId]] = {}
        self.ack_at: float | None = None  # when the owed live acknowledgements go
        #: Our events (by seq) we sent through a relay (server-side fanout), and when:
        #: not in flight to the members from us (``Sessions.in_flight``). Pruned past
        #: ``ACK_TIMEOUT``, after which nothing counts as in flight anyway.
        self.via_relay: dict[int, float] = {}

    def has(self, peer: PeerId, event: Event) -> bool:
        """Does ``peer`` have ``event`` (acknowledged it or a later one of its author's,
        or its vector says so)?"""
        if event.author == self.me and self.own_upto.get(peer, 0) >= event.seq:
            return True
        return super().has(peer, event)

    def send(self, peer: PeerId, payload: Payload, kind: str) -> bool:
        if isinstance(payload, Vector):
            self.owed.pop(peer, None)  # our whole frontier: it says all an ack would
        return super().send(peer, payload, kind)

    # -- acknowledgements we receive --

    def on_ack(self, sender: PeerId, ack: Ack | Got) -> None:
        if sender in self.core.state.relays:
            self.relay_ack(sender, ack)
            return
        if sender not in self.core.state.members and self.departure(sender) is None:
            return  # only a member's (or a departed member's) receipt counts
        if isinstance(ack, Got):
            self.on_got(sender, ack)
            return
        if ack.kind == "unread":
            self.on_unreadable(sender, ack.ids)
            return
        if ack.kind == "readable":
            for event_id in ack.ids:
                self.unreadable_by.get(event_id, set()).discard(sender)
            self.notify()
            return
        changed = False
        top = 0
        for event_id in ack.ids:
            if event_id in self.own_ids:
                seen = self.acked.setdefault(event_id, {})
                if sender not in seen:
                    seen[sender] = self.now
                    self.out.append(SaveDelivery(event_id, sender, self.now))
                    changed = True
                event = self.core.get(event_id)
                top = max(top, event.seq if event is not None else 0)
        if top > self.own_upto.get(sender, 0):  # it holds our 1..top (delivered in order)
            self.mark(sender, self.own_upto.get(sender, 0), top)
            changed = True
        session = self.sessions.get(sender)
        if session is not None and session.waiting in ack.ids:
            self.next_batch(sender, session)
        if changed:
            self.notify()  # delivery marks moved

    def relay_ack(self, sender: PeerId, ack: Ack | Got) -> None:
        """A relay's receipt moves the sync session we stream it (it is no member:
        nothing counts as delivered to it)."""
        session = self.sessions.get(sender)
        waiting = None if session is None or session.waiting is None \
            else self.core.get(session.waiting)
        if session is None or waiting is None:
            return
        if (waiting.id in ack.ids if isinstance(ack, Ack) and ack.kind == "ack"
                else isinstance(ack, Got) and dict(ack.upto).get(waiting.author, 0)
                >= waiting.seq):
            self.next_batch(sender, session)

    def on_got(self, sender: PeerId, got: Got) -> None:
        """``sender`` holds every event of each author up to the seq given."""
        upto = dict(got.upto)
        have = self.core.frontier.get(self.me, 0)
        top = min(upto.get(self.me, 0), have)  # (never beyond what we hold ourselves)
        if top > self.own_upto.get(sender, 0):
            self.mark(sender, self.own_upto.get(sender, 0), top)
            self.out.append(SaveDelivery(self.core.event_id(self.me, top), sender,
                                         self.now))  # one row per rise, not per event
            self.notify()  # delivery marks moved
        session = self.sessions.get(sender)
        waiting = None if session is None or session.waiting is None \
            else self.core.get(session.waiting)
        if session is not None and waiting is not None \
                and upto.get(waiting.author, 0) >= waiting.seq:
            self.next_batch(sender, session)

    def on_vector_receipt(self, sender: PeerId, vector: Vector) -> None:
        """A member's vector says how many of our events it holds: the same as a ``Got``
        (which is why a vector we send replaces the ``Got`` we owe)."""
        if sender not in self.core.state.members and self.departure(sender) is None:
            return
        claimed = dict(vector.vector).get(self.me, 0)
        top = min(claimed, self.core.frontier.get(self.me, 0))
        if top > self.own_upto.get(sender, 0):
            self.mark(sender, self.own_upto.get(sender, 0), top)
            self.out.append(SaveDelivery(self.core.event_id(self.me, top), sender, self.now))
            self.notify()  # delivery marks moved

    def restore_receipts(self) -> None:
        """After a restart: ``own_upto`` from the stored receipts (each one of our events
        a member acknowledged means it holds every earlier one of ours too)."""
        tops: dict[PeerId, int] = {}
        for event_id, members in list(self.acked.items()):
            event = self.core.get(event_id)
            if event is None or event.author != self.me:
                continue
            for member in members:
                tops[member] = max(tops.get(member, 0), event.seq)
        for member, top in tops.items():
            self.mark(member, 0, top)

    def mark(self, member: PeerId, old: int, top: int) -> None:
        """``member`` holds our events ``old + 1 .. top`` (and the earlier ones): what
        ``acked`` says per event (its readers keep working), at the time we learnt it."""
        self.own_upto[member] = top
        acked, now = self.acked, self.now
        for event_id in self.core.event_ids(self.me, old + 1, top):
            seen = acked.get(event_id)
            if seen is None:
                acked[event_id] = {member: now}
            elif member not in seen:
                seen[member] = now

    def on_unreadable(self, sender: PeerId, ids: tuple[EventId, ...]) -> None:
        """``sender`` stored these messages of ours but cannot read them: not delivered
        to it. A pairwise message gets its copy pushed again (relayed without it)."""
        again = []
        for event_id in ids:
            event = self.core.get(event_id)
            if event_id not in self.own_ids or event is None or event.kind is not Kind.MESSAGE:
                continue
            self.unreadable_by.setdefault(event_id, set()).add(sender)
            if ((event_id, sender) not in self.keys_resent
                    and sender in self.own_copies.get(event_id, {})):
                self.keys_resent.add((event_id, sender))
                again.append(event)  # (once per channel: see ``forget_resent``)
        self.warn(f"group {self.label}: {short_id(sender)} cannot read {len(ids)} of our "
                  f"message(s){'; sending its copies again' if again else ''}",
                  level=logging.INFO)
        if again:
            self.push(sender, again)
        self.notify()

    def forget_resent(self, peer: PeerId) -> None:
        """The channel to ``peer`` went down: what we pushed it again on an ``unread``
        may have been lost with it. It says ``unread`` again when a channel comes up
        (``recall_unread``), and is then answered again: once per (event, member) per
        channel, so a copy it cannot open is not sent in a loop, and a push lost with a
        dropped channel (a slow member's queue filled) is not lost for good."""
        self.keys_resent = {k for k in self.keys_resent if k[1] != peer}

    def report_unread(self, author: PeerId) -> None:
        """Tell ``author`` (if connected) which of its messages we cannot read."""
        ids = self.unread_reports.get(author)
        if ids and author in self.connected:
            for start in range(0, len(ids), MAX_EVENTS):
                chunk = sorted(ids)[start:start + MAX_EVENTS]
                self.send(author, Ack(tuple(chunk), "unread"), "ack")
            self.told_unread.update(ids)
            del self.unread_reports[author]

    # -- acknowledgements we owe --

    def ack(self, peer: PeerId, stored: list[EventId], message: Events) -> None:
        """We hold ``stored`` (delivered now, or before) of ``message``, which ``peer``
        sent us: owe it a ``Got``. A sync batch is answered at once (also with a per-id
        ``Ack`` of its last event, which is what older nodes' sessions wait for); live
        events after ``ACK_DELAY``, together with whatever else arrives meanwhile.

        A member's event that must wait for its causal past (we lack events it depends
        on: they reached its author by a path we were not on) makes us announce our
        vector soon (``nudge``: once for a burst), so whoever holds them streams them."""
        members = self.core.state.members
        if any(e.author in members and self.core.is_waiting(e) for e in message.events):
            self.nudge()
        sync = message.sync
        if not stored or peer == self.me:
            return
        authors = self.owed.setdefault(peer, set())
        via_relay = not sync and peer in self.core.state.relays
        for event_id in stored:
            event = self.core.get(event_id)
            if event is not None:
                authors.add(event.author)
                if via_relay and event.author != self.me and event.author in self.connected:
                    # a relay fanned it out: its author hears from us as if it had
                    # pushed it (delivery marks), the relay too (its held copies go)
                    self.owed.setdefault(event.author, set()).add(event.author)
        if sync:
            self.send_got(peer)
            self.send(peer, Ack((stored[-1],)), "ack")
        elif self.ack_at is None:
            self.ack_at = self.now + ACK_DELAY
            self.out.append(Wake(self.ack_at))

    def flush_acks(self) -> None:
        """Send the live acknowledgements that are due (on a ``Tick``)."""
        if self.ack_at is None:
            return
        if self.now < self.ack_at:  # (a tick for something else: ours is still to come)
            self.out.append(Wake(self.ack_at))
            return
        self.ack_at = None
        for peer in list(self.owed):
            self.send_got(peer)

    def send_got(self, peer: PeerId) -> None:
        """One ``Got`` with our frontier for the authors we owe ``peer`` (read now: the
        driver has stored every input before this one)."""
        authors = self.owed.pop(peer, set())
        frontier = self.core.frontier
        upto = tuple(sorted((a, frontier[a]) for a in authors if frontier.get(a, 0) > 0))
        if upto:
            self.send(peer, Got(upto), "ack")

    # -- bookkeeping every delivered event needs, live or replayed from the store --

    def note(self, delivered: Delivered) -> None:
        body, author = delivered.body, delivered.event.author
        if isinstance(body, Add) and author == self.me:
            self.invited.add(body.member)
        elif isinstance(body, Relay) and body.on and author == self.me:
            self.invited.add(body.peer)  # we designated it: we owe it the log
        elif isinstance(body, Receipt):
            positions = self.read.setdefault(author, {})
            for who, seq in body.read:
                positions[who] = max(positions.get(who, 0), seq)

    # -- the outbox --

    def flush(self, peer: PeerId) -> None:
        """Push ``peer`` our own events it has not acked (and the history, if we added it)."""
        members = self.core.state.members
        if (peer not in members and peer not in self.core.state.relays) \
                or peer not in self.connected:
            return  # (we may have left: then we still owe the members our departure)
        invited = peer in self.invited and self.me in members
        pending = [e for e in self.core.ordered()
                   if not self.has(peer, e) and (e.author == self.me or invited)]
        if pending:
            self.push(peer, pending)

    def invite(self, peer: PeerId) -> None:
        if peer in self.connected:
            self.push(peer, self.core.ordered())

    def push(self, peer: PeerId, events: list[Event]) -> None:
        for batch in batches(events):
            self.send_batch(peer, batch)

    def send_batch(self, peer: PeerId, batch: list[Event]) -> bool:
        copies, held = self.copies_for(peer, batch)
        return self.send(peer, Events(tuple(batch), copies, sync=True, held=held), "sync")

    def copies_for(self, peer: PeerId, batch: list[Event]) -> tuple[
            tuple[tuple[EventId, bytes], ...], tuple[tuple[EventId, PeerId, bytes], ...]]:
        """What goes with ``batch`` to ``peer``: its copies of our pairwise messages (and,
        ``node.group.key_copies``, of sender keys; and copies it should hold for others)."""
        copies = []
        for event in batch:
            if event.kind is Kind.MESSAGE and event.author == self.me:
                blob = self.own_copies.get(event.id, {}).get(peer)
                if blob is not None:
                    copies.append((event.id, blob))
        return tuple(copies), ()

    # -- sync sessions: one batch per acknowledgement --

    def start_session(self, peer: PeerId, events: list[Event]) -> None:
        session = Session(batches(events))
        self.sessions[peer] = session
        self.next_batch(peer, session)

    def next_batch(self, peer: PeerId, session: Session) -> None:
        """Send the next batch (less what ``peer`` got meanwhile), budget permitting."""
        batch: list[Event] = []
        vector = self.peer_vectors.get(peer, {})
        while session.batches and not batch:
            batch = [e for e in session.batches.pop(0) if lacks(vector, e)]
        if not batch or peer not in self.connected:
            self.end_session(peer)
            return
        budget = self.budgets.setdefault(peer, Budget(SYNC_RATE, SYNC_BURST))
        resume = budget.take(sum(len(e.raw) for e in batch), self.now)
        if resume is not None:  # over its byte budget: pause, resume on a Tick
            session.batches.insert(0, batch)
            session.waiting, session.resume_at = None, resume
            self.out.append(Wake(resume))
            return
        session.resume_at = None
        session.waiting = batch[-1].id
        session.deadline = self.now + ACK_TIMEOUT
        session.sent += len(batch)
        self.send_batch(peer, batch)

    def end_session(self, peer: PeerId) -> None:
        session = self.sessions.pop(peer, None)
        if session is not None and session.sent:
            self.warn(f"sync: sent {session.sent} event(s) of group {self.label} to "
                      f"{short_id(peer)}", level=20)
