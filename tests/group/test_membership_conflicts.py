"""Concurrent membership changes end in the same state on every node, by the documented rules."""

from __future__ import annotations

import itertools

from node.crypto.keys import IdentityKey
from node.group.bodies import Add, Ban, Remove, Role, SetRole
from node.group.events import Event
from node.group.state import GroupCore
from node.testing.groups import Replica

OWNER, A, B, X, M = (IdentityKey(bytes([i]) * 32) for i in range(10, 15))


def founded(*members: tuple[IdentityKey, Role]) -> tuple[dict[bytes, Replica], list[Event]]:
    owner, create = Replica.founding(OWNER, mode="pairwise")
    history = [create]
    for key, role in members:
        history.append(owner.author(Add(key.peer_id, Role.MEMBER, "")))
        if role is not Role.MEMBER:
            history.append(owner.author(SetRole(key.peer_id, role)))
    replicas = {OWNER.peer_id: owner}
    for key, _ in members:
        r = Replica(key, owner.core.group_id)
        r.receive(*history)
        replicas[key.peer_id] = r
    return replicas, history


def all_orders(history: list[Event], concurrent: list[Event]) -> list[GroupCore]:
    """Deliver history then the concurrent events in every order (and reversed history too)."""
    cores = []
    for perm in itertools.permutations(concurrent):
        for hist in (history, list(reversed(history))):
            core = GroupCore(history[0].group)
            for e in [*hist, *perm]:
                core.receive(e)
            for e in hist:  # reversed history needs a second pass to deliver
                core.receive(e)
            cores.append(core)
    return cores


def states(cores: list[GroupCore]) -> set[tuple[object, ...]]:
    return {
        (tuple(sorted(c.state.members.items())), tuple(e.id for e in c.ordered()),
         tuple(c.is_withdrawn(e.author, e.seq) for e in c.ordered()))
        for c in cores
    }


def test_two_admins_remove_each_other_first_in_order_wins() -> None:
    rs, history = founded((A, Role.ADMIN), (B, Role.ADMIN))
    a_removes_b = rs[A.peer_id].author(Remove(B.peer_id))
    b_removes_a = rs[B.peer_id].author(Remove(A.peer_id))
    cores = all_orders(history, [a_removes_b, b_removes_a])
    [final] = states(cores)
    members = dict(final[0])
    first = min((a_removes_b, b_removes_a), key=lambda e: e.order_key)
    survivor = A.peer_id if first is a_removes_b else B.peer_id
    loser = B.peer_id if survivor == A.peer_id else A.peer_id
    assert survivor in members and loser not in members
    core = cores[0]
    second = b_removes_a if first is a_removes_b else a_removes_b
    assert core.is_withdrawn(second.author, second.seq)


def test_removal_concurrent_with_add_of_the_same_person_remove_wins() -> None:
    rs, history = founded((A, Role.ADMIN), (B, Role.MEMBER))
    # X was a member and left the group's view of B: B re-adds X while A removes X
    owner = rs[OWNER.peer_id]
    add_x = owner.author(Add(X.peer_id, Role.MEMBER, ""))
    for r in (rs[A.peer_id], rs[B.peer_id]):
        r.receive(add_x)
    history.append(add_x)
    a_removes_x = rs[A.peer_id].author(Remove(X.peer_id))
    # B has not seen the removal: adds M and, in a fresh view, X is a member already, so B
    # instead promotes nothing; the concurrent add is of a new member M by B and of X by owner
    b_adds_m = rs[B.peer_id].author(Add(M.peer_id, Role.MEMBER, ""))
    owner_readds = rs[A.peer_id].author(Add(X.peer_id, Role.MEMBER, ""))  # after removal: allowed
    cores = all_orders(history, [a_removes_x, b_adds_m])
    [final] = states(cores)
    assert X.peer_id not in dict(final[0]) and M.peer_id in dict(final[0])
    # a re-add causally after the removal does bring X back
    core = cores[0]
    core.receive(owner_readds)
    assert X.peer_id in core.state.members


def test_concurrent_add_and_remove_of_a_new_person() -> None:
    rs, history = founded((A, Role.ADMIN), (B, Role.MEMBER))
    b_adds_x = rs[B.peer_id].author(Add(X.peer_id, Role.MEMBER, ""))
    a_bans_x = rs[A.peer_id].author(Ban(X.peer_id))
    cores = all_orders(history, [b_adds_x, a_bans_x])
    [final] = states(cores)
    assert X.peer_id not in dict(final[0])
    assert all(X.peer_id in c.state.banned for c in cores)


def test_removal_concurrent_with_messages_of_the_removed_member() -> None:
    rs, history = founded((A, Role.ADMIN), (B, Role.MEMBER))
    before = rs[B.peer_id].say("sent before the removal, seen by A")
    rs[A.peer_id].receive(before)
    removal = rs[A.peer_id].author(Remove(B.peer_id))
    during = [rs[B.peer_id].say(f"concurrent {i}") for i in range(2)]
    cores = all_orders([*history, before], [removal, *during])
    [_final] = states(cores)
    core = cores[0]
    assert B.peer_id not in core.state.members
    assert not core.is_withdrawn(before.author, before.seq)
    assert all(core.is_withdrawn(e.author, e.seq) for e in during)
