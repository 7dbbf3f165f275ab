"""Events of groups we are not in: held bounded, adopted once they make us a member."""

from __future__ import annotations

import logging

import pytest

from node.crypto.keys import IdentityKey
from node.group import invitations
from node.group.bodies import Add, Role
from node.group.invitations import MAX_EVENTS, MAX_GROUPS, Adopt, Invitations
from node.group.member_io import Warn
from node.testing.groups import Replica

ME = IdentityKey.generate()
OWNER = IdentityKey.generate()


def test_an_add_of_us_adopts_the_group_with_its_history() -> None:
    owner, create = Replica.founding(OWNER)
    inv = Invitations(ME.peer_id)
    held = inv.receive(OWNER.peer_id, owner.core.group_id, [create])
    assert isinstance(held, Warn) and held.level == logging.INFO and "holding 1" in held.text
    add = owner.author(Add(ME.peer_id, Role.MEMBER, ""))
    adopted = inv.receive(OWNER.peer_id, owner.core.group_id, [add], ((add.id, b"x"),))
    assert isinstance(adopted, Adopt)
    assert [e.id for e in adopted.events] == [create.id, add.id]
    assert adopted.copies == ((add.id, b"x"),)
    assert ME.peer_id in adopted.core.state.members
    assert inv.pending == {}  # handed over, not kept


def test_events_that_do_not_make_us_a_member_are_held_then_dropped() -> None:
    owner, create = Replica.founding(OWNER, max_members=2 * MAX_EVENTS)
    inv = Invitations(ME.peer_id)
    events = [create] + [owner.author(Add(IdentityKey.generate().peer_id, Role.MEMBER, ""))
                         for _ in range(MAX_EVENTS)]
    outcome = inv.receive(OWNER.peer_id, owner.core.group_id, events)
    assert isinstance(outcome, Warn) and outcome.level == logging.WARNING
    assert outcome.text.startswith(f"dropping {MAX_EVENTS + 1} events")
    assert inv.pending == {}


def test_at_most_a_few_unknown_groups_are_held() -> None:
    inv = Invitations(ME.peer_id)
    groups = [Replica.founding(OWNER) for _ in range(3 * MAX_GROUPS)]
    for replica, create in groups:
        assert isinstance(inv.receive(OWNER.peer_id, replica.core.group_id, [create]), Warn)
        assert len(inv.pending) <= MAX_GROUPS
    assert list(inv.pending) == [r.core.group_id for r, _ in groups[-MAX_GROUPS:]]  # newest


def test_events_without_their_create_say_so() -> None:
    owner, _ = Replica.founding(OWNER)
    add = owner.author(Add(IdentityKey.generate().peer_id, Role.MEMBER, ""))
    outcome = Invitations(ME.peer_id).receive(OWNER.peer_id, owner.core.group_id, [add])
    assert isinstance(outcome, Warn) and "(no CREATE yet)" in outcome.text


def test_what_one_peer_may_make_us_hold_is_bounded_in_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invitations, "MAX_BYTES_PER_PEER", 20_000)
    inv = Invitations(ME.peer_id)
    mallory = IdentityKey.generate().peer_id
    outcomes = []
    for _ in range(2 * MAX_GROUPS):
        owner, create = Replica.founding(OWNER, max_members=400)
        events = [create] + [owner.author(Add(IdentityKey.generate().peer_id, Role.MEMBER,
                                              "x" * 60)) for _ in range(30)]
        outcomes.append(inv.receive(mallory, owner.core.group_id, events))
        assert inv.held_from(mallory) <= 20_000
    refused = [o for o in outcomes if isinstance(o, Warn) and "more than 20000 bytes" in o.text]
    assert refused and all(o.level == logging.WARNING for o in refused)
    # someone else is not charged for what mallory sent
    owner, create = Replica.founding(OWNER)
    held = inv.receive(OWNER.peer_id, owner.core.group_id, [create])
    assert isinstance(held, Warn) and "holding 1" in held.text


def test_what_a_peer_alone_sent_is_forgotten_when_it_goes() -> None:
    inv = Invitations(ME.peer_id)
    mallory, bob = IdentityKey.generate().peer_id, IdentityKey.generate().peer_id
    mine, create = Replica.founding(OWNER)
    shared, shared_create = Replica.founding(OWNER)
    inv.receive(mallory, mine.core.group_id, [create])
    inv.receive(mallory, shared.core.group_id, [shared_create])
    inv.receive(bob, shared.core.group_id, [shared_create])
    assert inv.peer_gone(mallory) == 1
    assert list(inv.pending) == [shared.core.group_id]  # bob fed it too: kept
    assert inv.held_from(mallory) == 0
    assert inv.peer_gone(bob) == 1 and inv.pending == {} and inv.senders == {}
