"""Anti-entropy: version vectors, sync sessions and nudges (pure).

Theory of operation
-------------------
Because delivery is causal and per-author contiguous, the set of events a
member holds in a group is summed up exactly by its version vector (author ->
highest seq). When a member's channel comes up, on ``Announce`` (the driver's
periodic beat) and after a nudge, we send each connected member we share the
group with our vector (``want``). The receiver streams back every event the
sender lacks, in delivery order (causal, so each can be delivered on arrival),
in bounded batches, one batch per acknowledgement of the previous one's last
event (``node.group.delivery``); a batch not acknowledged within
``ACK_TIMEOUT`` ends the session (the next vector starts another), and so does
the peer's channel going down. If the
receiver itself lacks something the sender has, it answers with its own
vector, and the sender streams back.

Any member relays any member's events: they are signed, and in private groups
encrypted for the group, so a member who was away catches up from whoever it
meets first. Pairwise-mode copies are the exception: only the author holds
each recipient's copy, so a relayed pairwise message is stored unreadable
until its author pushes the copy (its outbox does, when they next meet).

A member that departed gets what led to its departure and nothing after,
except what voids a later admission of it (a member re-added it while being
cut off concurrently: it believes it is back, and must learn that it is not).
Events learnt by sync (``Events.sync``) make us announce our vector to every
connected member ``NUDGE_DELAY`` later (one ``Wake`` for a burst): without it,
a healed partition would converge only at the next periodic exchange.

A peer's vector also tells which of our events it has: delivery receipts
without a receipt per message.

**What a vector may cost us.** A vector is small and a session's batch is up
to 512 KiB, so answering every vector anew would let a peer draw ten thousand
times what it sends. A vector therefore never restarts a session under way (the
session leaves out what the newer vector shows the peer got); the same vector,
while we hold nothing new, is answered once (again only after
``RESYNC_AFTER``), and so is a request for our vector; and every session spends
a per-peer byte budget (``node.group.delivery``). A peer's channel going down
forgets all of this, so a reconnecting peer is answered at once.
"""

from __future__ import annotations

from node.group.authoring import admitted_by
from node.group.member_io import Vector
from node.group.member_state import RESYNC_AFTER
from node.group.membership import MembershipEvent
from node.group.receiving import Receiving
from node.ids import PeerId, short_id
from node.sync.plan import behind, missing


class Sessions(Receiving):
    def tick(self) -> None:
        """Time passed: send a due nudge, resume sessions that have budget again, end
        sessions whose batch went unacknowledged."""
        if self.nudge_at is not None and self.now >= self.nudge_at:
            self.nudge_at = None
            self.announce_all()
        for peer, session in list(self.sessions.items()):
            if session.resume_at is not None and self.now >= session.resume_at:
                self.next_batch(peer, session)
        self.expire_sessions()

    def expire_sessions(self) -> None:
        """End sessions whose last batch went unacknowledged for ``ACK_TIMEOUT``.

        Checked on every tick and announcement, never with a timer of its own: a
        stalled session only holds references to events we keep anyway, and the
        periodic vector exchange starts a new one (so a quiet simulation ends when
        the traffic does, not an ack timeout later).
        """
        for peer, session in list(self.sessions.items()):
            if session.waiting is not None and self.now >= session.deadline:
                self.warn(f"sync: {short_id(peer)} did not acknowledge a batch of group "
                          f"{self.label}; stopping for now", level=20)
                self.end_session(peer)

    def announce_all(self) -> None:
        self.expire_sessions()
        for peer in sorted(self.connected):
            self.announce(peer)

    def announce(self, peer: PeerId) -> None:
        """Send ``peer`` our vector, if we share the group."""
        if self.shared(peer):
            self.send(peer, Vector(self.vector(), True), "vector")

    def shared(self, peer: PeerId) -> bool:
        # A member, or one who departed and is owed what led to its departure. (Whether
        # we are members does not matter: if we left, the members may not know it yet.)
        return peer in self.core.state.members or self.departure(peer) is not None

    def on_vector(self, sender: PeerId, message: Vector) -> None:
        if not self.shared(sender):
            return
        theirs = dict(message.vector)
        self.peer_vectors[sender] = theirs
        mine = self.core.frontier
        if theirs.get(self.me, 0) > mine.get(self.me, 0):
            self.own_claims.setdefault(sender, self.now)  # we are behind on our own events
        if (sender not in self.sessions and behind(mine, theirs)
                and self.fresh(self.answered, sender, theirs)):
            departure = self.departure(sender)
            owed = [] if departure is None else [departure, *self.voided(sender, departure)]
            events = [e for e in missing(self.core.delivered_order(), theirs)
                      if departure is None or any(d.saw(e.author, e.seq) for d in owed)]
            self.start_session(sender, events)
        if (message.want and behind(theirs, mine)
                and self.fresh(self.replied, sender, theirs)):
            self.send(sender, Vector(self.vector(), False), "vector")
        self.notify()

    def voided(self, peer: PeerId, departure: MembershipEvent) -> list[MembershipEvent]:
        """Departures that void a later admission of ``peer``: a member that re-added it
        was cut off concurrently, so ``peer`` believes it is back and must learn it is
        not (it is owed them, and their causal past, like its own departure)."""
        voiding = []
        for m in self.core.membership_events():
            if (admitted_by(m.author, m.kind, m.body) == peer and m.id != departure.id
                    and m.saw(departure.author, departure.seq)
                    and self.core.is_withdrawn(m.author, m.seq)):
                voiding += [d.event for d in self.core.state.departures
                            if d.member == m.author and d.cut < m.seq]
        return voiding

    def fresh(self, seen: dict[PeerId, tuple[dict[PeerId, int], int, float]], peer: PeerId,
              theirs: dict[PeerId, int]) -> bool:
        """Is ``theirs`` worth answering: new from ``peer``, or we hold more since we last
        answered it, or that was ``RESYNC_AFTER`` ago? (Records it as answered if so.)"""
        held = self.core.delivered_count()
        last = seen.get(peer)
        if (last is not None and last[0] == theirs and last[1] == held
                and self.now - last[2] < RESYNC_AFTER):
            return False
        seen[peer] = (theirs, held, self.now)
        return True

    def peer_up(self, peer: PeerId) -> None:
        """A channel to ``peer`` came up: push what it has not acked, then announce."""
        self.connected.add(peer)
        self.flush(peer)
        self.announce(peer)
        self.report_unread(peer)

    def peer_down(self, peer: PeerId) -> None:
        self.connected.discard(peer)
        self.sessions.pop(peer, None)
        self.answered.pop(peer, None)
        self.replied.pop(peer, None)
        self.own_claims.pop(peer, None)
