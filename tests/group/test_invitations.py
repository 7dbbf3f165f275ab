"""Events of groups we are not in: held bounded, adopted once they make us a member."""

from __future__ import annotations

import logging

from node.crypto.keys import IdentityKey
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
