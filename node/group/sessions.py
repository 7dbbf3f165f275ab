"""Anti-entropy: version vectors, pulls, sync sessions and nudges (pure).

The lagging side (telling, pulling, nudges, unread copies) is ``node.group.pulling``;
this module adds the streaming side, channels and the periodic beat.

Theory of operation
-------------------
Because delivery is causal and per-author contiguous, the set of events a
member holds in a group is summed up exactly by its version vector (author ->
highest seq). Anti-entropy is **pulled** by the member that lacks something,
from one member at a time, so that after a heal what a lagging member lacks
reaches it once, not once per member that holds it:

* **Telling** (``offer``): when a channel comes up, on ``Announce`` (the
  driver's periodic beat) and after a catch-up, we send a connected member
  our vector (``want`` false) only if it may lack something we hold: unless
  the last vector it sent us (or, for our own events, its ack of our latest)
  covers ours, and unless we told it this very vector less than
  ``RESYNC_AFTER`` ago on this channel. A member whose vector is known never
  to shrink (it only does on a restart, and a restarted node knows nobody's
  vector, so it tells everyone) is thus told exactly when it may lack something.
  A member that departed is told only while it may lack what it is owed (see
  *Streaming*), never for what came after: that would be every beat, for good.
* **Answering a plain vector**: if the sender lacks something we hold, or
  holds exactly what we do (it told us because it believes we lack
  something: our vector is its receipt), we tell it ours, under the same rule.
  A plain vector never starts a stream. A member that departed answers every
  plain vector (under the same rule): it is told only what led to its departure,
  and so never holds what the others do.
* **Pulling** (``pull``): when the vectors of our connected members show one
  holds something we lack, we send the best of them (``node.sync.choose``)
  our vector with ``want`` true, and wait for its stream, one request at a
  time. The request is done when our frontier covers the vector the member
  had when we asked; it fails when no batch of it delivered anything for
  ``ASK_TIMEOUT`` (that member is then passed over for ``ASK_BACKOFF``,
  doubling with each failure in a row, so a member that claims to hold
  everything and sends nothing costs one timeout per back-off), and is
  dropped when its channel closes; then we ask the next best. What a relay is
  pushing us (server-side fanout) is left out of the pull for up to
  ``RELAY_WAIT`` (``node.group.pulling``): it is in flight.
* **Streaming** (``want`` true): the receiver streams back every event the
  sender lacks, in delivery order (causal, so each can be delivered on
  arrival), in bounded batches, one batch per acknowledgement of the previous
  one's last event (``node.group.delivery``); a batch not acknowledged within
  ``ACK_TIMEOUT`` ends the session, and so does the peer's channel going down.
  Our own events we fanned out live to that peer on this channel less than
  ``ACK_TIMEOUT`` ago and that it has not acknowledged are in flight: they are
  left out, not sent twice.
* **Nudges**: events learnt by sync (``Events.sync``) make us tell,
  ``NUDGE_DELAY`` later (one ``Wake`` for a burst), the authors of those
  events (a receipt) and at most ``NUDGE_FANOUT`` other connected members that
  may lack them (a different pseudo-random few each time): they pass the news
  on in turn, so a member that no holder reaches directly still hears of it
  without every member telling every other after a heal; the periodic beat
  catches up whoever the gossip missed. Live events make us tell the
  connected members their author had not seen admitted (its fanout did not
  go to them) and those we hold no vector of (a newcomer, a group adopted
  while connected).
* **Unread copies**: when a member's channel comes up we note again which of
  its messages we hold but cannot read, and report them (``unread``): it sends
  the copy only it holds. (Before a restart we may have told it; that is
  forgotten, and its outbox no longer pushes what we hold.)

Any member relays any member's events: they are signed, and in private groups
encrypted for the group. Copies only the author holds (pairwise copies, sealed
keys) travel with the author's own stream, which is why, among members who
hold as much, the one who authored most of it is asked first; a relayed
message without its copy is reported ``unread`` and its author sends the copy.

A member that departed gets what led to its departure and nothing after,
except what voids a later admission of it (a member re-added it while being
cut off concurrently: it believes it is back, and must learn that it is not).

When a channel comes up to a member we do not know to hold the group (we have
no vector of it since we started), we also push it our own events it has not
acknowledged and, if we added it, the history (``Delivery.flush``): it may not
know the group yet, and so cannot pull.

**What a vector may cost us.** A ``want`` never restarts a session under way
(the session leaves out what the newer vector shows the peer got); the same
vector, while we hold nothing new, is answered once (again only after
``RESYNC_AFTER``); and every session spends a per-peer byte budget
(``node.group.delivery``). A peer's channel going down forgets all of this, so
a reconnecting peer is answered at once.
"""

from __future__ import annotations

from node.group.authoring import admitted_by
from node.group.events import Event
from node.group.member_io import Vector, Wake
from node.group.member_state import ACK_TIMEOUT, RESYNC_AFTER
from node.group.membership import MembershipEvent
from node.group.pulling import Pulling, VectorMap
from node.ids import PeerId, short_id
from node.sync.choose import covers
from node.sync.plan import behind, missing


class Sessions(Pulling):
    def tick(self) -> None:
        """Time passed: send a due nudge, resume sessions that have budget again, end
        sessions whose batch went unacknowledged, give up on a silent request."""
        if self.nudge_at is not None and self.now >= self.nudge_at:
            self.nudge_at = None
            self.nudge_now()
        for peer, session in list(self.sessions.items()):
            if session.resume_at is not None and self.now >= session.resume_at:
                self.next_batch(peer, session)
        self.expire_sessions()
        self.check_asking()
        if self.asking is None and self.relay_overdue():
            self.pull()  # a relay did not deliver in time what it was pushing us
        # A driver keeps one timer per group, the earliest: ask again for what is due
        # later (a Wake we gave while an earlier one was pending may have been dropped).
        due = [self.nudge_at, self.ack_at, *(s.resume_at for s in self.sessions.values()),
               *(until for _, until in self.relay_due.values())]
        if self.asking is not None:
            due.append(self.asking.deadline)
        later = [t for t in due if t is not None and t > self.now]
        if later:
            self.out.append(Wake(min(later)))

    def expire_sessions(self) -> None:
        """End sessions whose last batch went unacknowledged for ``ACK_TIMEOUT``.

        Checked on every tick and announcement, never with a timer of its own: a
        stalled session only holds references to events we keep anyway, and the
        peer asks again (so a quiet simulation ends when the traffic does, not an
        ack timeout later).
        """
        for peer, session in list(self.sessions.items()):
            if session.waiting is not None and self.now >= session.deadline:
                self.warn(f"sync: {short_id(peer)} did not acknowledge a batch of group "
                          f"{self.label}; stopping for now", level=20)
                self.end_session(peer)

    def announce_all(self) -> None:
        """The periodic beat: tell whoever may lack something, pull what we lack."""
        self.expire_sessions()
        for peer in sorted(self.connected):
            self.offer(peer)
        self.pull()

    # -- vectors --

    def on_vector(self, sender: PeerId, message: Vector) -> None:
        if not self.shared(sender):
            return
        theirs = dict(message.vector)
        self.peer_vectors[sender] = theirs
        mine = self.core.frontier
        if theirs.get(self.me, 0) > mine.get(self.me, 0):
            self.own_claims.setdefault(sender, self.now)  # we are behind on our own events
        they_lack = behind(mine, theirs)
        if message.want:
            if sender not in self.sessions and self.fresh(self.answered, sender, theirs):
                self.stream(sender, theirs)
        else:
            asking = self.asking
            if asking is not None and asking.peer == sender:  # its stream is over
                self.asking = None
                if covers(mine, asking.target):
                    self.passed_over.pop(sender, None)
                else:  # it holds more than it sends us: not again for this pair
                    self.exhausted[sender] = (dict(self.vector()), theirs)
            # A departed member answers too: the sender tells it because it believes it
            # lacks what it is owed (``knows_all``), and stops once it knows it does not.
            if they_lack or theirs == dict(self.vector()) or self.departure(self.me):
                self.tell(sender)
        if behind(theirs, mine):  # it holds something we lack
            self.pull()
        self.notify()

    def knows_all(self, peer: PeerId) -> bool:
        """Does ``peer`` hold all we would send it, as far as we know? A member: all we
        hold. A departed member: all it is owed (what led to its departure; see
        ``stream``), not what came after, which we would never send it."""
        departure = self.departure(peer)
        if departure is None:
            return super().knows_all(peer)
        known = self.known(peer)
        if known is None:
            return False
        for owed in (departure, *self.voided(peer, departure)):
            for author, n in (*owed.clock.items(), (owed.author, owed.seq)):
                if n > known.get(author, 0) and not (author == self.me
                                                     and self.has_own(peer, n)):
                    return False
        return True

    def stream(self, peer: PeerId, theirs: VectorMap) -> None:
        """Start a session sending ``peer`` what it lacks (less what is in flight)."""
        departure = self.departure(peer)
        owed = [] if departure is None else [departure, *self.voided(peer, departure)]
        events = [e for e in missing(self.core.delivered_order(), theirs)
                  if departure is None or any(d.saw(e.author, e.seq) for d in owed)]
        sending = [e for e in events if not self.in_flight(peer, e)]
        if sending:
            self.start_session(peer, sending)
        else:
            self.stream_over(peer)

    def end_session(self, peer: PeerId) -> None:
        had = peer in self.sessions
        super().end_session(peer)
        if had:
            self.stream_over(peer)

    def stream_over(self, peer: PeerId) -> None:
        """Tell ``peer`` that we sent all we will for its request: our vector."""
        mine = dict(self.vector())
        if self.send(peer, Vector(tuple(sorted(mine.items())), False), "vector"):
            self.told[peer] = (mine, self.now)

    def in_flight(self, peer: PeerId, event: Event) -> bool:
        """Did we fan ``event`` (ours) out live to ``peer`` on this channel less than
        ``ACK_TIMEOUT`` ago, without an ack of it yet? (With server-side fanout we sent
        it to the relay we fan out through, not to the members.)"""
        if event.author != self.me:
            return False
        if self.has(peer, event) or event.seq <= self.up_since.get(peer, 0):
            return False
        if event.seq in self.via_relay and peer not in self.connected_relays()[:1]:
            return False  # server-side fanout: in flight to the relay, not to the members
        at = self.joined_at.get(event.id)
        return at is not None and self.now - at < ACK_TIMEOUT

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

    # -- channels --

    def peer_up(self, peer: PeerId) -> None:
        """A channel to ``peer`` came up: tell it our vector if it may lack something (it
        pulls); push the outbox only to a member we do not know to hold the group."""
        self.connected.add(peer)
        self.up_since[peer] = self.core.frontier.get(self.me, 0)
        self.told.pop(peer, None)
        if self.known(peer) is None:
            self.flush(peer)
        self.offer(peer)
        self.recall_unread(peer)
        self.report_unread(peer)

    def peer_down(self, peer: PeerId) -> None:
        self.connected.discard(peer)
        self.sessions.pop(peer, None)
        self.answered.pop(peer, None)
        self.replied.pop(peer, None)
        self.own_claims.pop(peer, None)
        self.told.pop(peer, None)
        self.up_since.pop(peer, None)
        self.exhausted.pop(peer, None)
        self.forget_resent(peer)
        if any(relay == peer for relay, _ in self.relay_fed.values()):
            self.relay_fed = {a: f for a, f in self.relay_fed.items() if f[0] != peer}
            self.relay_due = {a: d for a, d in self.relay_due.items() if a in self.relay_fed}
            self.pull()  # what it was pushing us we now pull from the others
        if self.asking is not None and self.asking.peer == peer:
            self.asking = None
            self.pull()
