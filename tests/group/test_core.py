"""GroupCore: causal delivery, one order, dedup, equivocation, validation, bounded buffer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.group.bodies import Add, Ban, Leave, Remove, Role, SetRole
from node.group.events import Event, Kind, decode_event
from node.group.state import (
    Delivered,
    Dropped,
    Duplicate,
    Equivocation,
    GroupCore,
    Rejected,
)
from node.testing.groups import Replica

KEYS = [IdentityKey(bytes([i]) * 32) for i in range(1, 7)]


def group_of(n: int, mode: str = "pairwise") -> tuple[list[Replica], list[Event]]:
    """A founded group of n members, every replica up to date; returns the history."""
    owner, create = Replica.founding(KEYS[0], mode=mode)
    history = [create]
    for key in KEYS[1:n]:
        history.append(owner.author(Add(key.peer_id, Role.MEMBER, "")))
    replicas = [owner]
    for key in KEYS[1:n]:
        r = Replica(key, owner.core.group_id)
        r.receive(*history)
        replicas.append(r)
    return replicas, history


def delivered(effects: list) -> list[Event]:  # type: ignore[type-arg]
    return [e.event for e in effects if isinstance(e, Delivered)]


def test_founding_and_adding() -> None:
    (owner, bob, carol), _ = group_of(3)
    assert owner.core.state.members == {
        KEYS[0].peer_id: Role.OWNER, KEYS[1].peer_id: Role.MEMBER, KEYS[2].peer_id: Role.MEMBER
    }
    assert bob.core.state.members == owner.core.state.members == carol.core.state.members


def test_events_round_trip_canonically() -> None:
    (_owner, bob), _ = group_of(2)
    event = bob.say("hello")
    assert decode_event(event.raw) == event and decode_event(event.raw).id == event.id


def test_out_of_order_events_wait_for_their_past() -> None:
    (owner, bob, carol), history = group_of(3, mode="pairwise")
    e1 = bob.say("one")
    carol.receive(e1)
    e2 = carol.say("two, after one")
    fresh = Replica(KEYS[3], owner.core.group_id)
    assert delivered(fresh.receive(e2)) == []  # waits for history and e1
    assert fresh.core.buffered() == {KEYS[2].peer_id: [e2.seq]}
    fresh.receive(*history)
    assert delivered(fresh.receive(e1)) == [e1, e2]
    assert fresh.core.buffered() == {}


def test_duplicate_and_equivocation() -> None:
    (owner, bob), _ = group_of(2)
    e = bob.say("once")
    assert isinstance(owner.receive(e)[0], Delivered)
    assert isinstance(owner.receive(e)[0], Duplicate)
    # bob signs a different event with the same seq
    other = Replica(KEYS[1], owner.core.group_id)
    other.core = GroupCore(owner.core.group_id)
    other.receive(*[x for x in owner.core.ordered() if x != e])
    twin = other.say("twice")
    assert twin.seq == e.seq and twin.id != e.id
    [effect] = owner.receive(twin)
    assert isinstance(effect, Equivocation) and effect.first == e.id


def test_forged_signature_is_rejected() -> None:
    (owner, bob), _ = group_of(2)
    e = bob.say("real")
    forged = e.unsigned.signed(bytes(64))
    [effect] = owner.receive(forged)
    assert isinstance(effect, Rejected) and "bad signature" in effect.reason


def test_non_member_and_guest_cannot_post() -> None:
    (owner, _bob), history = group_of(2)
    stranger = Replica(KEYS[4], owner.core.group_id)
    stranger.core = GroupCore(owner.core.group_id)
    stranger.receive(*history)
    # the stranger forges membership locally to author an event
    stranger.core.state.members[KEYS[4].peer_id] = Role.MEMBER
    e = stranger.say("let me in")
    [effect] = owner.receive(e)  # its SENDER_KEY event comes first
    assert isinstance(effect, Rejected) and "not a member" in effect.reason

    owner.author(Add(KEYS[5].peer_id, Role.GUEST, "guest"))
    guest = Replica(KEYS[5], owner.core.group_id)
    guest.receive(*owner.core.ordered())
    guest.core.state.members[KEYS[5].peer_id] = Role.MEMBER  # pretend
    e = guest.say("hi")
    [effect] = owner.receive(e)
    assert isinstance(effect, Rejected) and "guests cannot post" in effect.reason


def test_member_cannot_claim_admin_powers() -> None:
    (owner, bob, _carol), _ = group_of(3)
    bob.core.state.members[KEYS[1].peer_id] = Role.ADMIN  # bob lies to himself
    e = bob.author(Remove(KEYS[2].peer_id))
    [effect] = owner.receive(e)
    assert isinstance(effect, Rejected) and "only owner and admins" in effect.reason
    assert KEYS[2].peer_id in owner.core.state.members


def test_removed_member_events_after_removal_are_rejected() -> None:
    (owner, bob, _carol), _ = group_of(3)
    removal = owner.author(Remove(KEYS[1].peer_id))
    bob.receive(removal)
    bob.core.state.members[KEYS[1].peer_id] = Role.MEMBER  # bob ignores his removal
    late = bob.say("still here?")
    effects = owner.receive(late)
    assert effects, "the late event must be answered with a rejection, not ignored"
    assert all(isinstance(e, Rejected) for e in effects)
    assert owner.core.get(late.id) is None


def test_backdated_event_of_a_removed_member_is_withdrawn() -> None:
    (owner, bob, carol), _ = group_of(3)
    removal = owner.author(Remove(KEYS[1].peer_id))
    backdated = bob.say("I never saw my removal")  # bob's clock does not include it
    owner.receive(backdated)
    carol.receive(backdated, removal)
    for r in (owner, carol):
        assert backdated in r.core.ordered()  # valid in its own past ...
        assert r.core.is_withdrawn(backdated.author, backdated.seq)  # ... but cut off


def test_role_changes_and_ban() -> None:
    (owner, bob, _carol), _ = group_of(3)
    owner.author(SetRole(KEYS[1].peer_id, Role.ADMIN))
    bob.receive(*owner.core.ordered())
    bob.author(Ban(KEYS[2].peer_id))
    owner.receive(*bob.core.ordered())
    assert KEYS[2].peer_id not in owner.core.state.members
    assert KEYS[2].peer_id in owner.core.state.banned
    with pytest.raises(AssertionError):
        owner.author(Add(KEYS[2].peer_id, Role.MEMBER, ""))  # banned: rejected locally
    # an admin cannot act on the owner
    with pytest.raises(AssertionError):
        bob.author(Remove(KEYS[0].peer_id))


def test_leave_advances_departures() -> None:
    (owner, bob, _carol), _ = group_of(3)
    before = owner.core.state.departures_applied
    owner.receive(bob.author(Leave()))
    assert KEYS[1].peer_id not in owner.core.state.members
    assert owner.core.state.departures_applied == before + 1


def test_unknown_group_is_rejected() -> None:
    (owner, _bob), _ = group_of(2)
    _other, create = Replica.founding(KEYS[3])
    [effect] = owner.receive(create)
    assert isinstance(effect, Rejected) and "another group" in effect.reason


def test_bad_lamport_is_rejected() -> None:
    (owner, bob), _ = group_of(2)
    e = bob.say("x")
    u = e.unsigned
    from dataclasses import replace

    bad = replace(u, lamport=u.lamport + 1000)
    forged = bad.signed(KEYS[1].sign(bad.signing_bytes()))
    [effect] = owner.receive(forged)
    assert isinstance(effect, Rejected)


def test_causal_gap_that_never_fills_is_bounded() -> None:
    (owner, bob), history = group_of(2)
    core = GroupCore(owner.core.group_id, max_buffer_per_author=10, max_buffer=15)
    core.receive(history[0])
    events = [bob.say(f"m{i}") for i in range(30)]
    results = [core.receive(e) for e in events[1:]]  # events[0] (and the add) never arrive
    dropped = [r for r in results if r and isinstance(r[0], Dropped)]
    assert len(dropped) == 29 - 10
    assert sum(len(v) for v in core.buffered().values()) == 10


# -- convergence: any order, duplication, loss then redelivery --


def _scenario(seed: int) -> tuple[list[Replica], list[Event]]:
    rng = random.Random(seed)
    replicas, history = group_of(4)
    events = list(history)
    for _ in range(20):
        a, b = rng.sample(replicas, 2)
        a.receive(*rng.sample(b.core.ordered(), k=len(b.core.ordered())))
        action = rng.random()
        if a.peer_id not in a.core.state.members:
            continue  # removed: it knows it can no longer post
        if action < 0.8:
            events.append(a.say(f"{a.peer_id.hex()[:4]}-{len(events)}"))
        elif action < 0.9 and a is replicas[0]:
            target = rng.choice(replicas[1:])
            if target.peer_id in a.core.state.members:
                events.append(a.author(Remove(target.peer_id)))
    all_events = {e.id: e for r in replicas for e in r.core.ordered()}
    return replicas, list(all_events.values())


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), order_seed=st.integers(0, 10_000))
def test_any_delivery_order_gives_the_same_ordered_log(seed: int, order_seed: int) -> None:
    replicas, events = _scenario(seed)
    group = replicas[0].core.group_id
    rng = random.Random(order_seed)
    logs = []
    for _ in range(3):
        core = GroupCore(group)
        stream = events + rng.sample(events, k=len(events) // 3)  # duplicates
        rng.shuffle(stream)
        lost = set(rng.sample(range(len(stream)), k=len(stream) // 5))
        for i, e in enumerate(stream):
            if i not in lost:
                core.receive(e)
        for e in events:  # redelivery of everything (the lost ones included)
            core.receive(e)
        # The order kept up to date on each delivery is the sorted order of what arrived.
        assert core.ordered() == sorted(core.delivered_order(), key=lambda e: e.order_key)
        assert core.last_message == {
            a: max(e.seq for e in events if e.author == a and e.kind is Kind.MESSAGE)
            for a in {e.author for e in events if e.kind is Kind.MESSAGE}}
        logs.append(([e.id for e in core.ordered()], sorted(core.state.members.items()),
                     [core.is_withdrawn(e.author, e.seq) for e in core.ordered()]))
    assert logs[0] == logs[1] == logs[2]
    assert len(logs[0][0]) == len(events)
    # the order respects causality: every event comes after its clock dependencies
    core_order = {eid: i for i, eid in enumerate(logs[0][0])}
    for e in events:
        for who, count in e.clock:
            dep = next(x for x in events if x.author == who and x.seq == count)
            assert core_order[dep.id] < core_order[e.id]


def test_private_messages_are_signed_by_the_sender_key() -> None:
    (owner, bob), _ = group_of(2, mode="private")
    message = bob.say("hi")
    key_event = next(e for e in bob.core.ordered() if e.author == bob.peer_id and e.seq == 1)
    assert [type(x) for x in owner.receive(message)] == []  # waits for its SENDER_KEY
    assert [type(x) for x in owner.receive(key_event)] == [Delivered, Delivered]
    # the same message signed by the identity key instead is not acceptable
    (owner2, bob2), _ = group_of(2, mode="private")
    bob2.new_sender_key()
    owner2.receive(*bob2.core.ordered())
    u = bob2.core.next_event(bob2.peer_id, bob2.epoch, message.kind, message.body)
    forged = u.signed(KEYS[1].sign(u.signing_bytes()))
    [effect] = owner2.receive(forged)
    assert isinstance(effect, Rejected) and "bad signature" in effect.reason


def test_gaps_count_what_is_known_to_be_missing() -> None:
    (owner, bob, carol), history = group_of(3)
    bobs = [bob.say(f"b{i}") for i in range(5)]
    carol.receive(*bobs)
    late = carol.say("after bob's five")
    fresh = GroupCore(owner.core.group_id)
    for e in history:
        fresh.receive(e)
    assert fresh.gaps() == {}
    fresh.receive(late)  # says bob had 5 events: we have none of them
    assert fresh.gaps() == {bob.peer_id: 5}
    fresh.receive(bobs[4])  # one of the five is now waiting here
    assert fresh.gaps() == {bob.peer_id: 4}
    for e in bobs[:4]:
        fresh.receive(e)
    assert fresh.gaps() == {} and fresh.buffered() == {}
