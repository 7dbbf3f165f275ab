"""``GroupCore``: one group's replicated event log on one node (pure, sans-I/O).

Theory of operation
-------------------
Events arrive in any order, duplicated, from any member. ``receive(event)``
returns what happened as a list of effects and never raises for remote
faults: a bad event is a ``Rejected`` effect and the core carries on.

* **Dedup and equivocation.** An event whose (author, seq) is already
  delivered is a ``Duplicate`` if the id matches and an ``Equivocation`` if
  not (the author signed two different events with one seq): rejected,
  recorded, reported.
* **Causal delivery.** An event is delivered only when everything in its
  vector clock is: the author's previous event (its seq is contiguous) and,
  for every other author x, x's events up to ``clock[x]``. The full clock is
  the author's previous full clock updated with the event's delta. Early
  events wait in a ``CausalBuffer`` (node.group.causal_buffer), bounded per
  author and in total: what overflows is dropped (``Dropped``), and sync
  fetches it again later.
* **Checks at delivery** (all deterministic, so every node accepts the same
  events): the delta only raises entries; the Lamport number is exactly
  ``1 + max`` over the event's direct dependencies; the epoch never goes
  down; the body decodes for its kind; the signature verifies (identity key,
  or for private messages the author's sender key for that epoch); the
  author is authorized in the membership of the event's causal past.
* **Order.** ``ordered()`` lists delivered events by (lamport, author, seq);
  because a dependency always has a smaller Lamport number, the order
  respects causality, and it is the same on every node that has the same
  events, whatever order they came in.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import nacl.exceptions
import nacl.signing

from node.errors import RemoteProtocolError
from node.group.bodies import Create, Delete, Pin, Role, SenderKey, decode_body, group_id_for
from node.group.causal_buffer import (
    MAX_BUFFER,
    MAX_BUFFER_BYTES,
    MAX_BUFFER_BYTES_PER_AUTHOR,
    MAX_BUFFER_PER_AUTHOR,
    CausalBuffer,
)
from node.group.events import (
    MEMBERSHIP_KINDS,
    TARGETED_KINDS,
    Event,
    EventId,
    GroupId,
    Kind,
    UnsignedEvent,
)
from node.group.log_effects import (
    Deleted,
    Delivered,
    Dropped,
    Duplicate,
    Effect,
    Equivocation,
    MembershipChanged,
    Rejected,
)
from node.group.membership import (
    AuthorizationError,
    Membership,
    MembershipEvent,
    authorize,
    departures,
    fold,
    fold_next,
)
from node.ids import PeerId

#: A departed member's events beyond its cut-off (withdrawn: never shown, never
#: decrypted) are still taken into the log, so every node holds the same events; but
#: at most this many past the cut-off, so a removed member cannot grow everyone's log.
MAX_WITHDRAWN = 256
#: Memberships of causal pasts that lack some membership event, kept for reuse (see _state_at).
PAST_STATES = 32

Clock = dict[PeerId, int]


def _order_key(event: Event) -> tuple[int, bytes, int]:
    return event.order_key


__all__ = ["MAX_BUFFER", "MAX_BUFFER_BYTES", "MAX_BUFFER_BYTES_PER_AUTHOR",
           "MAX_BUFFER_PER_AUTHOR", "Deleted", "Delivered", "Dropped", "Duplicate", "Effect",
           "Equivocation", "GroupCore", "MembershipChanged", "Rejected"]

class GroupCore:
    def __init__(
        self,
        group_id: GroupId,
        *,
        max_buffer_per_author: int = MAX_BUFFER_PER_AUTHOR,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self.group_id = group_id
        #: author -> highest contiguous delivered seq (the version vector).
        self.frontier: Clock = {}
        self._clock: dict[PeerId, Clock] = {}  # author -> full clock at its latest event
        self._deltas: dict[PeerId, list[tuple[tuple[PeerId, int], ...]]] = {}
        self._lamports: dict[PeerId, list[int]] = {}
        self._ids: dict[PeerId, list[EventId]] = {}
        self._delivered: list[Event] = []
        #: The delivered events in the total order, kept sorted as they arrive (a late
        #: event is inserted, most land at the end): ``ordered`` must not sort per call.
        self._ordered: list[Event] = []
        #: author -> highest seq of its delivered MESSAGE events (read marks, receipts).
        self.last_message: Clock = {}
        self._by_id: dict[EventId, Event] = {}
        #: Deleted message -> the DELETE that took effect (first in the total order).
        self.deleted: dict[EventId, Event] = {}
        self._pins: dict[EventId, tuple[tuple[int, bytes, int], bool]] = {}
        self._membership_events: list[MembershipEvent] = []
        #: Of the membership events: the greatest order key and ``departures()`` (for fold_next).
        self._last_key: tuple[int, bytes, int] | None = None
        self._departures_of: dict[PeerId, list[MembershipEvent]] = {}
        self.signing_keys: dict[tuple[PeerId, int], bytes] = {}
        self._epochs: Clock = {}
        #: The events waiting for their causal past.
        self._buffer = CausalBuffer(max_buffer_per_author, max_buffer)
        #: author -> how many membership events (a prefix of ``_membership_events``) its
        #: latest delivered event had seen: where the next one's check starts.
        self._covered: Clock = {}
        #: (seen prefix, seen indices after it) -> membership of such a causal past.
        self._past_states: dict[tuple[int, tuple[int, ...]], Membership] = {}
        self.state = Membership()
        #: What the member core derives from the membership alone (its admissions), one
        #: entry per kind, tagged with what it was derived from: ``copy`` shares it, so
        #: copies in one state (the simulator's members) derive it once between them.
        self.memo: dict[str, tuple[object, ...]] = {}

    def copy(self) -> GroupCore:
        """An independent copy: same delivered and waiting events, keys and membership.

        What either copy receives later does not change the other. Events and
        membership states are shared: the core never changes one once made (a new
        membership state is a new object), so only the containers are copied.
        """
        twin = GroupCore(self.group_id)
        twin.frontier = dict(self.frontier)
        twin._clock = dict(self._clock)  # the inner clocks are replaced whole, never changed
        twin._deltas = {a: list(v) for a, v in self._deltas.items()}
        twin._lamports = {a: list(v) for a, v in self._lamports.items()}
        twin._ids = {a: list(v) for a, v in self._ids.items()}
        twin._delivered = list(self._delivered)
        twin._ordered = list(self._ordered)
        twin.last_message = dict(self.last_message)
        twin._by_id = dict(self._by_id)
        twin.deleted = dict(self.deleted)
        twin._pins = dict(self._pins)
        twin._membership_events = list(self._membership_events)
        twin._last_key = self._last_key
        twin._departures_of = {m: list(v) for m, v in self._departures_of.items()}
        twin.signing_keys = dict(self.signing_keys)
        twin._epochs = dict(self._epochs)
        twin._buffer = self._buffer.copy()
        twin._covered = dict(self._covered)
        twin._past_states = dict(self._past_states)
        twin.state = self.state
        twin.memo = self.memo
        return twin

    # -- queries --

    @property
    def max_buffer_per_author(self) -> int:
        return self._buffer.max_per_author

    @property
    def max_buffer(self) -> int:
        return self._buffer.max_total

    @property
    def buffered_bytes(self) -> int:
        """The bytes of the events waiting for their causal past."""
        return self._buffer.bytes

    @property
    def mode(self) -> str:
        return self.state.mode

    def has(self, author: PeerId, seq: int) -> bool:
        return seq <= self.frontier.get(author, 0)

    def event_id(self, author: PeerId, seq: int) -> EventId:
        return self._ids[author][seq - 1]

    def event_ids(self, author: PeerId, first: int, last: int) -> list[EventId]:
        """The ids of ``author``'s delivered events ``first`` to ``last`` (seqs)."""
        return self._ids[author][first - 1:last] if first <= last else []

    def delivered_order(self) -> list[Event]:
        """Delivered events in the order they were delivered here (a causal order)."""
        return list(self._delivered)

    def delivered_count(self) -> int:
        return len(self._delivered)

    def delivered_since(self, count: int) -> list[Event]:
        """The events delivered after the first ``count`` (in delivery order)."""
        return self._delivered[count:]

    def ordered(self) -> list[Event]:
        """Every delivered event in the one total order (a copy: the caller may keep it)."""
        return list(self._ordered)

    def ordered_view(self) -> Sequence[Event]:
        """``ordered()`` without the copy, for hot paths that only read it at once: the
        core inserts into it on the next delivery."""
        return self._ordered

    def membership_events(self) -> Sequence[MembershipEvent]:
        """The delivered membership events, in delivery order."""
        return self._membership_events

    def get(self, event_id: EventId) -> Event | None:
        """A delivered event by id."""
        return self._by_id.get(event_id)

    def pinned(self) -> list[EventId]:
        """Pinned messages (the last PIN or UNPIN of each, in the total order, wins)."""
        pins = [(key, target) for target, (key, on) in self._pins.items()
                if on and target not in self.deleted]
        return [target for _, target in sorted(pins)]

    def saw(self, event_id: EventId, target_id: EventId) -> bool:
        """Is delivered event ``target_id`` in the causal past of delivered ``event_id``?"""
        event, target = self._by_id.get(event_id), self._by_id.get(target_id)
        if event is None or target is None or event_id == target_id:
            return False
        if target.author == event.author:
            return target.seq < event.seq
        return self.clock_at(event.author, event.seq).get(target.author, 0) >= target.seq

    def is_muted(self, event: Event) -> bool:
        """A message suppressed by an admin's mute (see node.group.membership.MuteEpisode)."""
        if event.kind is not Kind.MESSAGE or not any(
            m.member == event.author for m in self.state.mutes
        ):
            return False
        return self.state.is_muted(event.author, event.seq,
                                   self.clock_at(event.author, event.seq))

    def latest_clock(self, author: PeerId) -> Clock:
        """The author's full clock at its latest delivered event (own entry excluded)."""
        return self._clock.get(author, {})

    def clock_at(self, author: PeerId, seq: int) -> Clock:
        """The author's full clock at its event ``seq`` (own entry excluded)."""
        clock: Clock = {}
        for delta in self._deltas[author][:seq]:
            clock.update(delta)
        return clock

    def is_withdrawn(self, author: PeerId, seq: int) -> bool:
        """Cut off by a removal (see node.group.membership): not shown, not applied."""
        if not any(d.member == author for d in self.state.departures):
            return False
        return self.state.is_withdrawn(author, seq, self.clock_at(author, seq))

    def is_waiting(self, event: Event) -> bool:
        return self._buffer.is_waiting(event)

    def size(self) -> int:
        """Delivered plus waiting events."""
        return len(self._delivered) + len(self._buffer)

    def waiting(self) -> list[Event]:
        """The events waiting in the buffer."""
        return self._buffer.events()

    def gaps(self) -> dict[PeerId, int]:
        """Per author, how many of its events we know exist but do not have yet.

        Known from the events waiting in the buffer: their own seq and the
        clocks they carry say how far each author had got.
        """
        return self._buffer.gaps(self.frontier)

    def buffered(self) -> dict[PeerId, list[int]]:
        """Events waiting for their causal past, by author (for "N not yet received")."""
        return self._buffer.by_author()

    def epoch_of(self, author: PeerId) -> int:
        """The epoch of ``author``'s latest delivered event (0 if none)."""
        return self._epochs.get(author, 0)

    def next_event(self, me: PeerId, epoch: int, kind: Kind, body: bytes) -> UnsignedEvent:
        """The next event ``me`` authors: it has seen everything delivered here."""
        full = {a: s for a, s in self.frontier.items() if a != me and s > 0}
        previous = self._clock.get(me, {})
        delta = tuple(sorted((a, s) for a, s in full.items() if previous.get(a, 0) != s))
        lamport = 1 + max((lams[-1] for lams in self._lamports.values() if lams), default=0)
        seq = self.frontier.get(me, 0) + 1
        return UnsignedEvent(self.group_id, me, seq, max(epoch, self._epochs.get(me, 0)), delta,
                             lamport, kind, body)

    # -- receiving --

    def receive(self, event: Event, signed_with: bytes | None = None) -> list[Effect]:
        """Take one event (from a peer, or authored here). ``signed_with``: the author's
        own core passes the public key it has just signed ``event`` with; if that is the
        key the event must be signed by, the signature is not checked again (a node
        trusts its own signing, not a peer's word)."""
        if event.group != self.group_id:
            return [Rejected(event, "event for another group")]
        author, seq = event.author, event.seq
        if self.has(author, seq):
            known = self.event_id(author, seq)
            if known == event.id:
                return [Duplicate(event)]
            # Only the author can equivocate: a forgery must not frame it.
            if self._signature_ok(event) is not True:
                return [Rejected(event, "bad signature")]
            return [Equivocation(author, seq, known, event)]
        queued = self._buffer.get(author, seq)
        if queued is not None and queued.id == event.id:  # the id covers the signature
            return [Duplicate(event)]
        # Check what can be checked before buffering, so strangers cannot fill the
        # buffer (or pre-empt an author's real event) with forgeries. A verified event
        # is remembered as such: delivery does not check it again.
        if signed_with is not None and signed_with == self._signing_key(event):
            verdict: bool | None = True
        else:
            verdict = self._signature_ok(event)
        if verdict is False:
            return [Rejected(event, "bad signature")]
        if self._beyond_withdrawn_cap(author, seq):
            return [Rejected(event, f"its author departed: more than {MAX_WITHDRAWN} events "
                                    "past its cut-off")]
        if queued is not None:
            other = self._verified_now(queued)
            if verdict is True and other is True:
                return [Equivocation(author, seq, queued.id, event)]
            if verdict is True:  # a verified event beats one nobody can check yet
                self._buffer.replace(event)
                self._remember_verified(event)
                return self._drain()
            return [Dropped(event, "another event with this seq is already waiting")]
        nxt = self.frontier.get(author, 0) + 1
        deliverable = seq == nxt and self._full_clock(event) is not None
        if not self._buffer.admit(event, self.state.members, deliverable=deliverable):
            return [Dropped(event, "too many events waiting for their causal past")]
        if verdict is True:
            self._remember_verified(event)
        return self._drain()

    def _beyond_withdrawn_cap(self, author: PeerId, seq: int) -> bool:
        """Is ``author`` departed (not a member now) and ``seq`` more than
        ``MAX_WITHDRAWN`` past every cut-off it has? (A re-added author is a member: its
        new events pass; one whose re-admission we have not seen yet gets them by sync
        once we have.)"""
        if author in self.state.members:
            return False
        cuts = [d.cut for d in self.state.departures if d.member == author]
        return bool(cuts) and seq > max(cuts) + MAX_WITHDRAWN

    def _remember_verified(self, event: Event) -> None:
        key = self._signing_key(event)
        if key is not None:
            self._buffer.remember_verified(event.id, key)

    def _verified_now(self, event: Event) -> bool | None:
        """Like ``_signature_ok``, without checking again a waiting event that verified."""
        key = self._buffer.verified_key(event.id)
        if key is not None and key == self._signing_key(event):
            return True
        return self._signature_ok(event)

    def _drain(self) -> list[Effect]:
        effects: list[Effect] = []
        progress = True
        while progress:
            progress = False
            for author in self._buffer.authors():
                nxt = self.frontier.get(author, 0) + 1
                event = self._buffer.get(author, nxt)
                if event is None:
                    continue
                clock = self._full_clock(event)
                if clock is None:
                    continue
                self._buffer.take(author, nxt)
                try:
                    effects += self._deliver(event, clock)
                except (RemoteProtocolError, AuthorizationError) as exc:
                    effects.append(Rejected(event, str(exc)))
                    self._reject_later(author, effects)
                progress = True
        return effects

    def _reject_later(self, author: PeerId, effects: list[Effect]) -> None:
        """An author's events after a rejected one can never be delivered: drop them."""
        for later in self._buffer.take_author(author):
            effects.append(Rejected(later, "follows a rejected event of the same author"))

    def _full_clock(self, event: Event) -> Clock | None:
        """The event's full clock if its causal past is delivered, else None."""
        clock = dict(self._clock.get(event.author, {}))
        for who, count in event.clock:
            clock[who] = count
        for who, count in clock.items():
            if self.frontier.get(who, 0) < count:
                return None
        return clock

    def _deliver(self, event: Event, clock: Clock) -> list[Effect]:
        author = event.author
        previous = self._clock.get(author, {})
        for who, count in event.clock:
            if count <= previous.get(who, 0):
                raise RemoteProtocolError("clock delta lowers or repeats an entry")
        deps = [self._lamports[w][c - 1] for w, c in clock.items()]
        if event.seq > 1:
            deps.append(self._lamports[author][event.seq - 2])
        if event.lamport != 1 + max(deps, default=0):
            raise RemoteProtocolError(
                f"lamport {event.lamport} is not 1 + the maximum of its dependencies"
            )
        if event.epoch < self._epochs.get(author, 0):
            raise RemoteProtocolError("epoch went backwards")
        mode = self.state.mode if self.state.created else "private"
        body = decode_body(event.kind, event.body, mode=mode)
        self._check_signature(event, self._buffer.take_verified(event.id))
        if isinstance(body, Create) and (
            event.seq != 1 or clock or group_id_for(author, body.nonce) != self.group_id
        ):
            raise RemoteProtocolError("CREATE must be its author's first event of its group")
        covered = self._seen_prefix(clock, author, event.seq)
        past = self._state_at(clock, author, event.seq, covered)
        authorize(past, author, event.kind, body)
        if event.kind in TARGETED_KINDS:
            assert isinstance(body, Delete | Pin)
            self._check_target(event, clock, body, past)
        if isinstance(body, SenderKey):
            self._record_sender_key(event, body)

        self.frontier[author] = event.seq
        self._clock[author] = clock
        self._covered[author] = covered
        self._deltas.setdefault(author, []).append(event.clock)
        self._lamports.setdefault(author, []).append(event.lamport)
        self._ids.setdefault(author, []).append(event.id)
        self._epochs[author] = event.epoch
        self._delivered.append(event)
        if self._ordered and event.order_key < self._ordered[-1].order_key:
            bisect.insort(self._ordered, event, key=_order_key)
        else:
            self._ordered.append(event)
        if event.kind is Kind.MESSAGE:
            self.last_message[author] = max(self.last_message.get(author, 0), event.seq)
        self._by_id[event.id] = event
        effects: list[Effect] = [Delivered(event, body, clock)]
        if isinstance(body, Delete):
            first = self.deleted.get(body.target)
            if first is None or event.order_key < first.order_key:
                self.deleted[body.target] = event
            effects.append(Deleted(body.target, event))
        elif isinstance(body, Pin):
            known = self._pins.get(body.target)
            if known is None or known[0] < event.order_key:
                self._pins[body.target] = (event.order_key, body.pin)
        if event.kind in MEMBERSHIP_KINDS:
            own = dict(clock)
            own[author] = event.seq - 1
            new = MembershipEvent(event.id, author, event.seq, event.lamport, event.kind, body, own)
            before = self.state
            self.state = (fold_next(before, new, self._last_key, self._departures_of)
                          or fold([*self._membership_events, new]))
            self._membership_events.append(new)
            self._last_key = max(new.order_key, self._last_key or new.order_key)
            for member, departed in departures([new]).items():
                listed = self._departures_of.setdefault(member, [])
                listed.extend(departed)
                listed.sort(key=lambda m: m.order_key)  # as departures() of the sorted set
            effects.append(MembershipChanged(before, self.state))
        return effects

    def _check_target(self, event: Event, clock: Clock, body: Delete | Pin, past: Membership
                      ) -> None:
        """A DELETE or PIN must name a message in its own causal past, and may it?"""
        target = self._by_id.get(body.target)
        if target is None or not (
            target.seq < event.seq if target.author == event.author
            else clock.get(target.author, 0) >= target.seq
        ):
            raise AuthorizationError(f"no event {body.target.hex()[:12]} in this event's past")
        if target.kind is not Kind.MESSAGE:
            raise AuthorizationError("only messages can be deleted or pinned")
        role = past.role(event.author)
        if (isinstance(body, Delete) and target.author != event.author
                and (role is None or role < Role.ADMIN)):
            raise AuthorizationError("only the author or an admin may delete this message")

    def _signing_key(self, event: Event) -> bytes | None:
        """The key that must have signed ``event``; None if not known yet (a sender key)."""
        if event.kind is Kind.MESSAGE and self.state.mode not in ("pairwise", "open"):
            return self.signing_keys.get((event.author, event.epoch))
        return bytes(event.author)

    def _signature_ok(self, event: Event) -> bool | None:
        """True or False if the signature can be checked now, None if its key is unknown."""
        key = self._signing_key(event)
        if key is None:
            return None
        try:
            nacl.signing.VerifyKey(key).verify(event.unsigned.signing_bytes(), event.signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False
        return True

    def _check_signature(self, event: Event, verified_with: bytes | None = None) -> None:
        """Raise unless ``event`` is signed by its key (``verified_with``: it was, on arrival)."""
        if verified_with is not None and verified_with == self._signing_key(event):
            return
        verdict = self._signature_ok(event)
        if verdict is None:
            raise RemoteProtocolError(f"no sender key of its author for epoch {event.epoch}")
        if not verdict:
            raise RemoteProtocolError("bad signature")

    def _record_sender_key(self, event: Event, body: SenderKey) -> None:
        if body.epoch != event.epoch:
            raise RemoteProtocolError("SENDER_KEY epoch differs from its event's epoch")
        known = self.signing_keys.get((event.author, body.epoch))
        if known is not None and known != body.signing_public:
            raise RemoteProtocolError("a second, different sender key for the same epoch")
        self.signing_keys[(event.author, body.epoch)] = body.signing_public

    def _seen(self, m: MembershipEvent, clock: Clock, author: PeerId, seq: int) -> bool:
        """Is membership event ``m`` in the causal past of (author, seq) with full ``clock``?"""
        limit = seq - 1 if m.author == author else clock.get(m.author, 0)
        return m.seq <= limit

    def _seen_prefix(self, clock: Clock, author: PeerId, seq: int) -> int:
        """How many of the first membership events (in delivery order) (author, seq) saw.

        Clocks only grow along an author's events, so the search starts where the
        author's previous event stopped: usually nothing new to look at.
        """
        events = self._membership_events
        first = min(self._covered.get(author, 0), len(events))
        while first < len(events) and self._seen(events[first], clock, author, seq):
            first += 1
        return first

    def _state_at(self, clock: Clock, author: PeerId, seq: int, first: int) -> Membership:
        """Membership in the causal past of (author, seq) with full ``clock``.

        ``first`` is ``_seen_prefix``: the past holds the membership events before it
        and, of those after it, the ones it saw. If it saw them all, that is the
        current state; else the fold of that set, remembered by the set (a few
        concurrent events usually share a past).
        """
        events = self._membership_events
        if first == len(events):
            return self.state
        after = tuple(i for i in range(first + 1, len(events))
                      if self._seen(events[i], clock, author, seq))
        state = self._past_states.get((first, after))
        if state is None:
            state = fold([*events[:first], *(events[i] for i in after)])
            if len(self._past_states) >= PAST_STATES:
                del self._past_states[next(iter(self._past_states))]
            self._past_states[(first, after)] = state
        return state
