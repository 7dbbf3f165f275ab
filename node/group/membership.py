"""Group membership as a deterministic fold over membership events (pure).

Theory of operation
-------------------
Every node must reach the same membership from the same set of events,
whatever order they arrived in. So membership is never "updated" by an
arriving event; it is *computed*: ``fold(events)`` sorts the membership
events of a set by the total order (lamport, author, seq) and applies them
one by one. Two questions are kept apart:

1. **Is an event valid?** Its author must be allowed to do it in the state
   of the event's *causal past* (``fold`` of the membership events it had
   seen). This depends only on the event and its past, so it is decided
   once, when the event is delivered, identically everywhere. Invalid events
   are rejected and never stored or relayed.

2. **What is the state now?** ``fold`` of all valid membership events, with
   three rules for concurrent changes:

   * *Cut-off.* Removing (or banning) X records the remover's view of X:
     ``cut = remover's clock[X]``. X's events with a higher seq were made
     concurrently with, or after, its removal; they are **withdrawn**:
     neither shown nor applied. A member who leaves is cut off after its
     LEAVE. (This also stops a removed member from back-dating events by
     pretending not to have seen its removal.) A later re-add, causally after
     the removal, lifts the cut-off for X's events made after the re-add.
   * *First in order wins.* Membership events are applied in the total
     order, each re-checked against the state built so far and skipped if
     its author was cut off by an earlier one. So when two admins remove
     each other concurrently, the removal that comes first in the total
     order takes effect and the other, made by a member who was cut off,
     is withdrawn.
   * *Remove wins over a concurrent add.* An ADD of X that is concurrent with
     a REMOVE/BAN/LEAVE of X (neither saw the other) is ignored, whatever the
     order.

The state of a causal past (for validity) is computed with the same fold over
the membership events inside that past, so both questions use one function.

Open groups (``mode == "open"``) add three kinds. A peer adds *itself* with
JOIN: under the "blacklist" policy anyone not banned may, under "whitelist"
only a peer id an admin has APPROVEd. A JOIN is an admission like an ADD: it
loses to a concurrent departure of its author, and it lifts the cut-off of
that author's earlier departure for the events it makes from the JOIN on.
UNBAN lifts a ban (a timed ban's end is an UNBAN an admin's node authors: no
validity here ever depends on a clock).

RELAY (admins and the owner) designates or undesignates a relay: a peer that
stores and forwards the group's events but is never a member (``relays``). A
member, a banned peer or a current relay cannot be designated; a current relay
cannot be added or join (undesignate it first). Concurrent designation and
admission of the same peer: the first in the total order wins, the other is
skipped by the fold like any change overtaken by an earlier one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

from node.group.bodies import (
    DEFAULT_MAX_MEMBERS,
    Add,
    Approve,
    Ban,
    Body,
    Create,
    Join,
    Mute,
    Relay,
    Remove,
    Rename,
    Role,
    SetPolicy,
    SetRole,
    Unban,
)
from node.group.events import EventId, Kind
from node.ids import PeerId

Clock = Mapping[PeerId, int]


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """What the fold needs of a membership event (its full clock included)."""

    id: EventId
    author: PeerId
    seq: int
    lamport: int
    kind: Kind
    body: Body
    clock: Clock  # the author's full vector clock at this event, own entry = seq - 1

    @property
    def order_key(self) -> tuple[int, bytes, int]:
        return (self.lamport, bytes(self.author), self.seq)

    def saw(self, author: PeerId, seq: int) -> bool:
        """Was event (author, seq) in this event's causal past (or this event itself)?"""
        if author == self.author:
            return seq <= self.seq
        return seq <= self.clock.get(author, 0)


def admitted(e: MembershipEvent) -> PeerId:
    """Who an admission (ADD or JOIN) lets in."""
    if isinstance(e.body, Join):
        return e.author
    assert isinstance(e.body, Add)
    return e.body.member


@dataclass(frozen=True, slots=True)
class Departure:
    member: PeerId
    cut: int  # the member's events with seq > cut are withdrawn...
    event: MembershipEvent  # ...unless made after a re-add that saw this departure


@dataclass(slots=True)
class MuteEpisode:
    """An admin's mute of ``member``: its messages with seq > ``cut`` are refused..."""

    member: PeerId
    cut: int  # what the muting admin had seen of the member
    event: MembershipEvent
    until: int  # informational end (unix seconds, 0 = none); see Mute
    ended_by: MembershipEvent | None = None  # ...except those made after this UNMUTE

    def covers(self, author: PeerId, seq: int, clock_of: Clock | None) -> bool:
        if author != self.member or seq <= self.cut:
            return False
        end = self.ended_by
        return end is None or clock_of is None or clock_of.get(end.author, 0) < end.seq


@dataclass(slots=True)
class Membership:
    name: str = ""
    mode: str = "private"
    max_members: int = DEFAULT_MAX_MEMBERS
    add_policy: str = "members"
    share_history: bool = False
    owner: PeerId | None = None
    created: bool = False
    members: dict[PeerId, Role] = field(default_factory=dict)
    labels: dict[PeerId, str] = field(default_factory=dict)
    banned: set[PeerId] = field(default_factory=set)
    departures: list[Departure] = field(default_factory=list)
    readds: list[MembershipEvent] = field(default_factory=list)
    #: How many departures have taken effect: a new sender-key epoch is due when it grows.
    departures_applied: int = 0
    #: Admin mutes of members, in the total order (ended ones kept: they decide old events).
    mutes: list[MuteEpisode] = field(default_factory=list)
    #: Open groups: "whitelist" or "blacklist" ("" for private and pairwise groups).
    policy: str = ""
    #: Open groups with a whitelist: the peer ids admins approved (they may JOIN).
    approved: set[PeerId] = field(default_factory=set)
    #: Banned peers with a timed ban's informational end (unix seconds); see Ban.
    ban_until: dict[PeerId, int] = field(default_factory=dict)
    #: Peers designated as relays (RELAY on): they store and forward, never members.
    relays: set[PeerId] = field(default_factory=set)

    def muted(self) -> dict[PeerId, int]:
        """Members muted now, with each mute's informational end (0 = none)."""
        return {m.member: m.until for m in self.mutes if m.ended_by is None}

    def is_muted(self, author: PeerId, seq: int, clock_of: Clock | None = None) -> bool:
        """Is message (author, seq) suppressed by an admin's mute?

        Yes if a MUTE of its author had not seen it (seq above the mute's cut) and it was
        not made after the UNMUTE that ended that mute (``clock_of``: its full clock).
        """
        return any(m.covers(author, seq, clock_of) for m in self.mutes)

    def role(self, peer: PeerId) -> Role | None:
        return self.members.get(peer)

    def is_withdrawn(self, author: PeerId, seq: int, clock_of: Clock | None = None) -> bool:
        """Is event (author, seq) cut off by a departure (and not made after a later re-add)?"""
        for dep in self.departures:
            if dep.member != author or seq <= dep.cut:
                continue
            readded_after = any(
                admitted(add) == author
                and add.saw(dep.event.author, dep.event.seq)
                and (seq >= add.seq if add.author == author  # its own JOIN, and what follows
                     else clock_of is not None and clock_of.get(add.author, 0) >= add.seq)
                for add in self.readds
            )
            if not readded_after:
                return True
        return False


class AuthorizationError(Exception):
    """The author may not do this in the state it saw (the event is invalid)."""


def authorize(state: Membership, author: PeerId, kind: Kind, body: Body | None) -> None:
    """Raise ``AuthorizationError`` unless ``author`` may make this event in ``state``."""
    if kind is Kind.CREATE:
        if state.created:
            raise AuthorizationError("the group already exists")
        return
    if not state.created:
        raise AuthorizationError("the group has no CREATE in this event's past")
    if kind is Kind.JOIN:
        _authorize_join(state, author)
        return
    role = state.role(author)
    if role is None:
        raise AuthorizationError("author is not a member")
    if kind in (Kind.MESSAGE, Kind.SENDER_KEY, Kind.HISTORY):
        if role is Role.GUEST:
            raise AuthorizationError("guests cannot post")
        if kind is Kind.MESSAGE and author in state.muted():
            raise AuthorizationError("the author is muted by an admin")
        if kind is Kind.HISTORY and state.mode != "private":
            raise AuthorizationError("only private groups have sender keys to share")
        return
    if kind in (Kind.LEAVE, Kind.RECEIPT):  # guests read, so they may say so
        return
    if kind is Kind.DELETE:
        return  # whose message may be deleted is checked against the target (state.py)
    if kind is Kind.ADD:
        assert isinstance(body, Add)
        needed = Role.ADMIN if state.add_policy == "admins" else Role.MEMBER
        if role < needed:
            raise AuthorizationError(f"only {state.add_policy} may add members")
        if body.member in state.members:
            raise AuthorizationError("already a member")
        if body.member in state.banned:
            raise AuthorizationError("that peer is banned from this group")
        if body.member in state.relays:
            raise AuthorizationError("that peer is a relay of this group (undesignate it first)")
        if (state.policy == "whitelist" and role < Role.ADMIN
                and body.member not in state.approved):
            raise AuthorizationError("only admins may add a peer that is not approved")
        if body.role >= Role.OWNER or (body.role > role):
            raise AuthorizationError("cannot give a role above one's own")
        if len(state.members) >= state.max_members:
            raise AuthorizationError(f"the group is full ({state.max_members} members)")
        return
    if role < Role.ADMIN:
        raise AuthorizationError(f"only owner and admins may {kind.name.lower().replace('_', ' ')}")
    if kind in (Kind.REMOVE, Kind.BAN):
        assert isinstance(body, Remove | Ban)
        target = state.role(body.member)
        if kind is Kind.REMOVE and target is None:
            raise AuthorizationError("not a member")
        if target is Role.OWNER:
            raise AuthorizationError("nobody can remove or ban the owner")
    if isinstance(body, Mute):
        target = state.role(body.member)
        if body.mute and target is None:
            raise AuthorizationError("not a member")
        if target is not None and target >= role:
            raise AuthorizationError("can only mute or unmute members below one's own role")
        if not body.mute and body.member not in state.muted():
            raise AuthorizationError("that member is not muted")
    if isinstance(body, SetRole):
        target = state.role(body.member)
        if target is None:
            raise AuthorizationError("not a member")
        if target >= role or body.role >= role:
            raise AuthorizationError("can only change roles below one's own")
    if isinstance(body, Approve) and state.policy != "whitelist":
        raise AuthorizationError("only open groups with a whitelist approve peers")
    if isinstance(body, Unban) and body.member not in state.banned:
        raise AuthorizationError("that peer is not banned")
    if isinstance(body, Relay):
        _authorize_relay(state, body)


def _authorize_relay(state: Membership, body: Relay) -> None:
    """May an admin (checked by the caller) designate or undesignate this relay?"""
    if not body.on:
        if body.peer not in state.relays:
            raise AuthorizationError("that peer is not a relay of this group")
        return
    if body.peer in state.members:
        raise AuthorizationError("a member cannot be a relay (remove it first)")
    if body.peer in state.banned:
        raise AuthorizationError("that peer is banned from this group")
    if body.peer in state.relays:
        raise AuthorizationError("already a relay of this group")


def _authorize_join(state: Membership, author: PeerId) -> None:
    """May ``author`` add itself (JOIN) in ``state``?"""
    if state.mode != "open":
        raise AuthorizationError("only open groups can be joined; ask a member to add you")
    if author in state.members:
        raise AuthorizationError("already a member")
    if author in state.banned:
        raise AuthorizationError("that peer is banned from this group")
    if author in state.relays:
        raise AuthorizationError("that peer is a relay of this group (undesignate it first)")
    if state.policy == "whitelist" and author not in state.approved:
        raise AuthorizationError("this group admits only peers an admin approved")
    if len(state.members) >= state.max_members:
        raise AuthorizationError(f"the group is full ({state.max_members} members)")


def fold(events: Iterable[MembershipEvent]) -> Membership:
    """The membership produced by a set of *valid* membership events (see module docstring)."""
    # Keep this shape (what is learnt of the whole set first, then one _step per event
    # in order): fold_next relies on it.
    ordered = sorted(events, key=lambda e: e.order_key)
    departures_of = departures(ordered)
    state = Membership()
    for e in ordered:
        _step(state, e, departures_of)
    return state


def fold_next(state: Membership, e: MembershipEvent, last: tuple[int, bytes, int] | None,
              departures_of: dict[PeerId, list[MembershipEvent]]) -> Membership | None:
    """``fold([*events, e])`` in one step from ``state = fold(events)``, or None when one
    step might differ (the caller then folds the whole set). ``last`` is the greatest
    order key in ``events`` (None if empty), ``departures_of`` is ``departures(events)``.

    ``fold`` applies the events in the total order, each to the state the earlier
    ones built; only what it learns of the whole set first (``departures``) reaches
    back. So if ``e`` comes last in the order and adds nothing to that, the earlier
    events apply exactly as before and ``e`` applies to ``state``. A group grows by
    such steps (each ADD sees the previous ones): founding a group of N is N steps,
    not N folds.
    """
    if departures([e]) or (last is not None and e.order_key <= last):
        return None
    after = _copied(state)
    _step(after, e, departures_of)
    return after


def departures(ordered: Iterable[MembershipEvent]) -> dict[PeerId, list[MembershipEvent]]:
    """The departures (REMOVE, BAN, LEAVE) among ``ordered``, by who departs, in order."""
    departures_of: dict[PeerId, list[MembershipEvent]] = {}
    for e in ordered:
        if e.kind in (Kind.REMOVE, Kind.BAN):
            departures_of.setdefault(e.body.member, []).append(e)  # type: ignore[union-attr]
        elif e.kind is Kind.LEAVE:
            departures_of.setdefault(e.author, []).append(e)
    return departures_of


def _step(state: Membership, e: MembershipEvent,
          departures_of: dict[PeerId, list[MembershipEvent]]) -> None:
    if state.is_withdrawn(e.author, e.seq, e.clock) and not _rejoins(state, e):
        return
    try:
        authorize(state, e.author, e.kind, e.body)
    except AuthorizationError:
        return  # valid in its own past, overtaken by an earlier change: no effect
    _apply(state, e, departures_of)


def _copied(state: Membership) -> Membership:
    """A copy ``_apply`` can change without changing ``state``."""
    copy = replace(state)
    for f in fields(copy):
        value = getattr(copy, f.name)
        if isinstance(value, dict | set | list):
            setattr(copy, f.name, type(value)(value))
    copy.mutes = [replace(m) for m in state.mutes]  # episodes change in place
    return copy


def _rejoins(state: Membership, e: MembershipEvent) -> bool:
    """A JOIN made after every departure of its author: an admission, not a withdrawn event."""
    return e.kind is Kind.JOIN and all(
        e.saw(d.event.author, d.event.seq) for d in state.departures if d.member == e.author)


def _concurrent(a: MembershipEvent, b: MembershipEvent) -> bool:
    return not a.saw(b.author, b.seq) and not b.saw(a.author, a.seq)


def _apply(state: Membership, e: MembershipEvent, departures_of: dict[PeerId, list[MembershipEvent]]
           ) -> None:
    body = e.body
    if isinstance(body, Create):
        state.created = True
        state.name, state.mode = body.name, body.mode
        state.max_members, state.add_policy = body.max_members, body.add_policy
        state.share_history = body.share_history
        state.policy = body.policy if body.mode == "open" else ""
        state.owner = e.author
        state.members[e.author] = Role.OWNER
    elif isinstance(body, Add | Join):
        member = admitted(e)
        if any(_concurrent(e, d) for d in departures_of.get(member, [])):
            return  # remove wins over a concurrent add (or join)
        if any(d.member == member for d in state.departures):
            state.readds.append(e)
        state.members[member] = body.role if isinstance(body, Add) else Role.MEMBER
        if body.name:
            state.labels[member] = body.name
    elif isinstance(body, Remove | Ban) or e.kind is Kind.LEAVE:
        member = e.author if e.kind is Kind.LEAVE else body.member  # type: ignore[union-attr]
        cut = e.seq if e.kind is Kind.LEAVE else e.clock.get(member, 0)
        if isinstance(body, Ban):
            state.banned.add(member)
            state.ban_until[member] = body.until
        if member in state.members:
            del state.members[member]
            state.departures_applied += 1
            state.departures.append(Departure(member, cut, e))
        elif isinstance(body, Ban):
            state.departures.append(Departure(member, cut, e))
    elif isinstance(body, SetRole):
        state.members[body.member] = body.role
    elif isinstance(body, Rename):
        state.name = body.name
    elif isinstance(body, Approve):
        if body.approve:
            state.approved.add(body.member)
        else:
            state.approved.discard(body.member)
    elif isinstance(body, Unban):
        state.banned.discard(body.member)
        state.ban_until.pop(body.member, None)
    elif isinstance(body, SetPolicy):
        state.add_policy = body.add_policy
    elif isinstance(body, Relay):
        if body.on:
            state.relays.add(body.peer)
        else:
            state.relays.discard(body.peer)
    elif isinstance(body, Mute):
        current = [m for m in state.mutes if m.member == body.member and m.ended_by is None]
        if body.mute and current:
            current[0].until = body.until  # a new end for the mute in force
        elif body.mute:
            state.mutes.append(MuteEpisode(body.member, e.clock.get(body.member, 0), e,
                                           body.until))
        else:
            for m in current:
                m.ended_by = e
