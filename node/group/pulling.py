"""Anti-entropy, the lagging side: telling peers what we hold, and pulling what we
lack from one member at a time (pure).

See ``node.group.sessions`` for the whole scheme; this layer holds what a member
knows of its peers' vectors, when it tells them its own (``offer``, ``tell``,
the catch-up nudge), whom it asks for what it lacks (``pull``, with
``node.sync.choose``) and when it gives up on them, and the unread copies it
reports to their authors when they connect.

**Events in flight through a relay.** With server-side fanout an author sends one
copy to a relay, which pushes it to every member; meanwhile the author's vector
(its beat, a receipt) tells a member it holds more, and pulling that from the
author would make it send every event again. So an author whose events a connected
relay pushed us live (not ``sync``) and which advanced our frontier less than
``RELAY_WAIT`` ago is **relay-fed**: what others hold of it beyond our frontier is
taken as in flight through that relay (as our own live pushes in flight are left
out of a stream, ``Sessions.in_flight``), and ``pull`` leaves it out, for at most
``RELAY_WAIT`` after we first learnt it exists. Then, if our frontier has not reached
it (the relay withholds, drops or trickles), we pull it as usual: a relay delays
an event by ``RELAY_WAIT``, no more. The relay's channel going down ends this at once.
A relay itself waits the same way for an author's events the author is sending it
flagged (``fanout``): learnt first by sync from a member that pulled them, they would
arrive flagged as duplicates and never be fanned out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from node.group.authoring import admitted_by
from node.group.events import EventId, Kind
from node.group.member_io import Events, Vector, Wake
from node.group.member_state import RESYNC_AFTER
from node.group.receiving import Receiving
from node.ids import PeerId, short_id
from node.sync.choose import choose, covers, nudge_order

#: A member we asked that delivers nothing new for this long is passed over.
ASK_TIMEOUT = 10.0
#: ...for this long after its first failure in a row, doubling up to ``ASK_BACKOFF_MAX``.
ASK_BACKOFF = 60.0
ASK_BACKOFF_MAX = 3600.0
#: Besides the authors of what we learnt, a catch-up is told to at most this many members.
NUDGE_FANOUT = 2
#: What a relay pushing us an author's events has to deliver before we pull it elsewhere.
RELAY_WAIT = 5.0

VectorMap = dict[PeerId, int]


@dataclass(slots=True)
class Asking:
    """Our one request under way: whom we asked, what it held then, when it fails."""

    peer: PeerId
    target: VectorMap
    deadline: float


class Pulling(Receiving):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asking: Asking | None = None
        #: Members that failed a request: (passed over until, failures in a row).
        self.passed_over: dict[PeerId, tuple[float, int]] = {}
        #: Members whose stream ended short of what they hold: (our vector, theirs)
        #: then; not asked again until one of the two changes.
        self.exhausted: dict[PeerId, tuple[VectorMap, VectorMap]] = {}
        #: Per connected peer: the vector we last sent it on this channel, and when.
        self.told: dict[PeerId, tuple[VectorMap, float]] = {}
        #: Our own seq when each peer's channel came up (our later events were fanned
        #: out to it on this channel; no entry: up since before we started watching).
        self.up_since: dict[PeerId, int] = {}
        #: Authors of events we learnt by sync since the last nudge (they get a receipt).
        self.synced_authors: set[PeerId] = set()
        #: Connected members a live event's author did not send it to (it had not seen
        #: them admitted), and those we hold no vector of: told at the next nudge,
        #: whatever the fan-out limit.
        self.missed: set[PeerId] = set()
        self._admissions: tuple[object, dict[PeerId, tuple[PeerId, int]]] | None = None
        #: Of those admissions: author -> its latest one's seq (see note_missed).
        self._latest_admission: dict[PeerId, int] = {}
        #: (state, setup members, the members and departed outside the setup but us).
        self._unknown_base: tuple[object, frozenset[PeerId], frozenset[PeerId]] | None = None
        self.nudges = 0
        #: Relay-fed authors: author -> (the relay, or at a relay the author, whose live
        #: push last advanced us, and when).
        self.relay_fed: dict[PeerId, tuple[PeerId, float]] = {}
        #: Per relay-fed author: (the seq others hold that we lack, until when we wait
        #: for it through the relay).
        self.relay_due: dict[PeerId, tuple[int, float]] = {}

    def shared(self, peer: PeerId) -> bool:
        # A member, or one who departed and is owed what led to its departure, or a relay
        # of the group (it holds the log for others). (Whether we are members does not
        # matter: if we left, the members may not know it yet.)
        state = self.core.state
        return (peer in state.members or peer in state.relays
                or self.departure(peer) is not None)

    # -- telling --

    def known(self, peer: PeerId) -> VectorMap | None:
        """What we know ``peer`` holds (its last vector), if anything."""
        vector = self.peer_vectors.get(peer)
        if vector is None and peer in self.setup_members:
            return self.setup_frontier
        return vector

    def knows_all(self, peer: PeerId) -> bool:
        """Does ``peer`` hold everything we hold, as far as we know?"""
        known = self.known(peer)
        if known is None:
            return False
        for author, n in self.core.frontier.items():
            if n > known.get(author, 0) and not (author == self.me and self.has_own(peer, n)):
                return False
        return True

    def has_own(self, peer: PeerId, seq: int) -> bool:
        """Does ``peer`` hold our own event ``seq`` (and so every earlier one)?"""
        event = self.core.get(self.core.event_id(self.me, seq))
        return event is not None and self.has(peer, event)

    def offer(self, peer: PeerId) -> None:
        """Tell ``peer`` our vector if it may lack something we hold."""
        if self.shared(peer) and not self.knows_all(peer):
            self.tell(peer)

    def tell(self, peer: PeerId) -> None:
        """Send ``peer`` our vector (``want`` false), unless it got this one lately."""
        mine = dict(self.vector())
        last = self.told.get(peer)
        if last is not None and last[0] == mine and self.now - last[1] < RESYNC_AFTER:
            return
        if self.send(peer, Vector(tuple(sorted(mine.items())), False), "vector"):
            self.told[peer] = (mine, self.now)

    def nudge_now(self) -> None:
        """After a catch-up: a receipt to the authors of what we learnt, and the news to
        a few members that may lack it (see the module docstring)."""
        authors, self.synced_authors = self.synced_authors, set()
        missed, self.missed = self.missed, set()
        for peer in sorted(authors | missed):
            if peer in self.connected and self.shared(peer):
                self.tell(peer)
        mine = dict(self.vector())
        others = [p for p in sorted(self.connected)
                  if p not in authors and self.shared(p) and not self.knows_all(p)
                  and self.told.get(p, ({}, 0.0))[0] != mine]
        self.nudges += 1
        for peer in nudge_order(self.me, others, self.nudges)[:NUDGE_FANOUT]:
            self.tell(peer)

    # -- pulling --

    def pull(self) -> None:
        """Ask the best connected member for what we lack, if no request is under way."""
        mine = self.core.frontier
        asking = self.asking
        if asking is not None:
            if not covers(mine, asking.target):
                return
            self.asking = None  # done: that member delivered
            self.passed_over.pop(asking.peer, None)
        vector = dict(self.vector())
        candidates = {p: v for p, v in self.peer_vectors.items()
                      if p in self.connected and p != self.me and self.shared(p)
                      and self.passed_over.get(p, (-math.inf, 0))[0] <= self.now
                      and self.exhausted.get(p) != (vector, v)}
        waiting = self.relay_waiting(mine, candidates)
        if waiting:
            candidates = {p: {a: n for a, n in v.items() if a not in waiting}
                          for p, v in candidates.items()}
        peer = choose(self.me, mine, candidates)
        if peer is None:
            return
        if self.send(peer, Vector(tuple(sorted(vector.items())), True), "vector"):
            self.told[peer] = (vector, self.now)
            self.asking = Asking(peer, dict(candidates[peer]), self.now + ASK_TIMEOUT)
            self.wake_for_asking()

    def relay_waiting(self, mine: VectorMap, candidates: dict[PeerId, VectorMap]
                      ) -> set[PeerId]:
        """The relay-fed authors whose events ``candidates`` hold beyond ``mine`` we
        still wait for through the relay (see the module docstring); a ``Wake`` for the
        end of each wait."""
        if not self.relay_fed:
            return set()
        waiting = set()
        for author, (relay, at) in list(self.relay_fed.items()):
            if relay not in self.connected or self.now - at >= RELAY_WAIT:
                del self.relay_fed[author]
                self.relay_due.pop(author, None)
                continue
            have = mine.get(author, 0)
            claim = max((v.get(author, 0) for v in candidates.values()), default=0)
            due = self.relay_due.get(author)
            if due is not None and have >= due[0]:
                due = None  # the relay delivered what we waited for
            if claim <= have:
                self.relay_due.pop(author, None)
                continue
            if due is None:
                due = self.relay_due[author] = (claim, self.now + RELAY_WAIT)
            if self.now < due[1]:
                waiting.add(author)
                self.out.append(Wake(due[1]))
            elif due[1] > 0:
                self.relay_due[author] = (due[0], 0.0)  # (said once)
                self.warn(f"sync: relay {short_id(relay)} did not bring us {short_id(author)}'s "
                          f"events up to {due[0]} (we hold {have}) in group {self.label} "
                          f"within {RELAY_WAIT:g} s; pulling them", level=20)
        return waiting

    def relay_overdue(self) -> bool:
        """Did a wait for events through a relay end (pull them elsewhere now)?"""
        return any(self.now >= until for _, until in self.relay_due.values())

    def wake_for_asking(self) -> None:
        if self.asking is not None:
            self.out.append(Wake(self.asking.deadline))

    def check_asking(self) -> None:
        """Give up on a request whose member delivered nothing for ``ASK_TIMEOUT``."""
        asking = self.asking
        if asking is None or self.now < asking.deadline:
            return
        _, failures = self.passed_over.get(asking.peer, (0.0, 0))
        backoff = min(ASK_BACKOFF_MAX, ASK_BACKOFF * 2 ** min(failures, 16))
        self.passed_over[asking.peer] = (self.now + backoff, failures + 1)
        self.asking = None
        self.warn(f"sync: {short_id(asking.peer)} sent nothing of group {self.label} "
                  f"for {ASK_TIMEOUT:g} s; asking another member", level=20)
        self.pull()

    def receive(self, sender: PeerId, message: Events) -> list[EventId]:
        """Receive as ``Receiving`` does, noting progress of our request and what we
        learnt by sync (for the nudge's receipts)."""
        before = self.core.delivered_count()
        # (a relay's push to us, or at a relay an author's flagged copy: fanout)
        relay_push = not message.sync and (message.fanout or sender in self.core.state.relays)
        if relay_push:
            frontier = self.core.frontier
            had = {e.author: frontier.get(e.author, 0) for e in message.events}
        stored = super().receive(sender, message)
        if self.core.delivered_count() > before:
            if relay_push:  # server-side fanout: the rest of these authors' is coming
                frontier = self.core.frontier
                for author, seq in had.items():
                    if frontier.get(author, 0) > seq:
                        self.relay_fed[author] = (sender, self.now)
            if message.sync:
                self.synced_authors.update(e.author for e in message.events
                                           if e.author != self.me)
            else:
                self.note_missed(sender, message)
            # members we hold no vector of (newcomers, adopted while connected) hear too
            self.missed.update(self.unknown_connected())
            if self.missed:
                self.nudge()
            asking = self.asking
            if asking is not None:
                if asking.peer == sender:
                    asking.deadline = self.now + ASK_TIMEOUT
                self.pull()
        return stored

    def unknown_connected(self) -> list[PeerId]:
        """Connected members (or departed ones owed news) whose vector we do not know.

        Same as filtering every connected peer with ``known() is None and shared()``,
        but starts from the members and departed without a vector (set operations):
        this runs for each live event delivered, so it must not cost O(N) in Python."""
        state = self.core.state
        base = self._unknown_base
        if base is None or base[0] is not state or base[1] is not self.setup_members:
            pool = state.members.keys() | {d.member for d in state.departures}
            base = self._unknown_base = (state, self.setup_members,
                                         frozenset(pool - self.setup_members - {self.me}))
        unknown = base[2] - self.peer_vectors.keys()  # (nearly always empty: no O(N) here)
        return [p for p in unknown if p in self.connected and self.shared(p)]

    def note_missed(self, sender: PeerId, message: Events) -> None:
        """Live events from their author reached only the members it knew of: note the
        connected members whose admission it had not seen (we pass the news on)."""
        admissions = self.admissions()
        latest = self._latest_admission
        frontier = self.core.frontier
        for event in message.events:
            if event.author != sender or event.seq != frontier.get(event.author, 0):
                continue  # (its latest: whose clock we hold; an earlier one saw less)
            clock = self.core.latest_clock(event.author)
            # Nearly always the author had seen every admission: one check per author of
            # admissions (the latest of each), not one per member.
            if all(seq < event.seq if author == event.author else clock.get(author, 0) >= seq
                   for author, seq in latest.items()):
                continue
            for member, (author, seq) in admissions.items():
                if (member not in self.connected or member in (self.me, sender)
                        or member in self.missed):
                    continue
                seen = seq < event.seq if author == event.author else clock.get(author, 0) >= seq
                if not seen:
                    self.missed.add(member)

    def admissions(self) -> dict[PeerId, tuple[PeerId, int]]:
        """Each current member's admission event (author, seq), cached per state (in the
        core's memo, which copies of a core share: tagged with the state and the last
        membership event it was derived from)."""
        state = self.core.state
        if self._admissions is None or self._admissions[0] is not state:
            events = self.core.membership_events()
            tag = (state, len(events), events[-1].id if events else None)
            memo = self.core.memo.get("admissions")
            found: dict[PeerId, tuple[PeerId, int]]
            latest: dict[PeerId, int]
            if memo is not None and memo[0] is state and memo[1:3] == tag[1:]:
                found, latest = cast(Any, memo[3]), cast(Any, memo[4])
            else:
                found = {}
                for event in events:
                    member = admitted_by(event.author, event.kind, event.body)
                    if member is not None and member in state.members:
                        found[member] = (event.author, event.seq)
                latest = {}
                for author, seq in found.values():
                    latest[author] = max(seq, latest.get(author, 0))
                self.core.memo["admissions"] = (*tag, found, latest)
            self._admissions = (state, found)  # (both only ever read)
            self._latest_admission = latest
        return self._admissions[1]

    def recall_unread(self, author: PeerId) -> None:
        """Note again which of ``author``'s messages we hold but cannot read (they are
        reported to it: it sends the copy only it holds). Called when a channel to
        ``author`` comes up, so also what we told it before, on an earlier channel or
        before a restart: its answer may have been lost with that channel."""
        if author == self.me or self.core.mode == "open" or not self.shared(author):
            return
        admission = None
        for seq in range(1, self.core.frontier.get(author, 0) + 1):
            event = self.core.get(self.core.event_id(author, seq))
            if (event is None or event.kind is not Kind.MESSAGE or event.id in self.contents
                    or event.id in self.core.deleted
                    or self.core.is_withdrawn(author, seq)):
                continue
            admission = admission or self.admission(self.me)
            if admission is not None and self.core.saw(event.id, admission.id):
                self.unread_reports.setdefault(author, set()).add(event.id)
