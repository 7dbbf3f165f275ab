"""Two faults the member core fixed, over real nodes (loopback TCP, Noise, SQLite).

1. One incoming batch holding a newcomer's ADD followed by this node's own removal
   (or demotion) made the node author a SENDER_KEY its core refused, and exit.
2. After a partition in which conflicting removals resolved so that a member stays,
   that member could never read what was sent under sender keys made meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from node.api.python import open_node
from node.crypto.keys import IdentityKey
from node.group.bodies import Role
from node.group.events import Event, Kind
from node.group.member import Member as Group
from node.ids import PeerId, format_peer_id, parse_peer_id
from node.net.address import DialTarget, parse_hostport
from tests.integration.test_groups import SOON, founded, mesh, messages


@pytest.mark.parametrize("demote", [False, True])
async def test_an_add_then_our_removal_in_one_batch_keeps_the_node_running(
    tmp_path: Path, demote: bool
) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        async with open_node(tmp_path / "carol", name="carol", peers=[alice.listen]) as carol:
            with trio.fail_after(SOON):
                await carol.wait_for_peer(alice.peer_id)
            group = await founded([alice, carol], "private")
            alice.add(group, bob.peer_id, role="admin")
            carol.send(group, "carol gets a sender key")
            await messages(alice, group, 1)
            carol_id = carol.peer_id
        # carol is away: alice adds dave, then removes (or demotes) carol
        dave = format_peer_id(IdentityKey.generate().peer_id)
        alice.add(group, dave)
        if demote:
            alice.service.set_role(alice.service.find(group), parse_peer_id(carol_id), Role.GUEST)
        else:
            alice.remove(group, carol_id)
        # carol comes back: alice's outbox pushes both events in one batch
        async with open_node(tmp_path / "carol", name="carol", peers=[alice.listen]) as carol:
            g = await carol.group(group)
            me = carol.node.peer_id
            with trio.fail_after(SOON):
                await carol.service.wait_until(
                    lambda: (g.core.state.role(me) is Role.GUEST) if demote
                    else me not in g.core.state.members)
            assert parse_peer_id(dave) in g.core.state.members
            assert carol.app.groups is not None  # the node is still running ...
            alice.send(group, "still serving")
            await messages(bob, group, 2)  # ... and the others still talk


async def test_a_member_kept_after_conflicting_removals_reads_the_partition(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        async with AsyncExitStack() as stack:
            carol = await stack.enter_async_context(open_node(
                tmp_path / "carol", name="carol", peers=[alice.listen, bob.listen]))
            dave = await stack.enter_async_context(open_node(
                tmp_path / "dave", name="dave", peers=[alice.listen, bob.listen, carol.listen]))
            with trio.fail_after(SOON):
                for n in (alice, bob, carol):
                    await dave.wait_for_peer(n.peer_id)
            group = await founded([alice, bob, carol, dave], "private")
            g0 = alice.service.find(group)
            alice.service.set_role(g0, parse_peer_id(bob.peer_id), Role.ADMIN)
            alice.service.set_role(g0, parse_peer_id(carol.peer_id), Role.ADMIN)
            for n in (alice, bob, carol, dave):
                n.send(group, f"hello from {n.node.name}")
            for n in (alice, bob, carol, dave):
                await messages(n, group, 4)
            carol_id, dave_id = carol.peer_id, dave.peer_id
        # the partition: alice and bob | carol and dave, with conflicting removals
        bob.remove(group, carol_id)
        ga = await alice.group(group)
        with trio.fail_after(SOON):  # alice sends under a key carol does not get
            await alice.service.wait_until(
                lambda: parse_peer_id(carol_id) not in ga.core.state.members)
        alice.send(group, "alice during")
        bob.send(group, "bob during")
        async with AsyncExitStack() as stack:
            carol = await stack.enter_async_context(open_node(tmp_path / "carol", name="carol"))
            dave = await stack.enter_async_context(open_node(
                tmp_path / "dave", name="dave", peers=[carol.listen]))
            with trio.fail_after(SOON):
                await carol.wait_for_peer(dave_id)
            carol.remove(group, bob.peer_id)
            gd = await dave.group(group)
            with trio.fail_after(SOON):  # dave sends under a key bob does not get
                await dave.service.wait_until(
                    lambda: bob.node.peer_id not in gd.core.state.members)
            carol.send(group, "carol during")
            dave.send(group, "dave during")
            await messages(dave, group, 6)
            # the heal
            for n in (carol, dave):
                for other in (alice, bob):
                    await n.node.connect(DialTarget(*parse_hostport(other.listen)))
            everyone = (alice, bob, carol, dave)
            groups = [await n.group(group) for n in everyone]
            with trio.fail_after(SOON):
                for n, g in zip(everyone, groups, strict=True):
                    await n.service.wait_until(lambda g=g: _settled(groups, g))
            final = groups[0].core.state.members
            assert len([p for p in (bob.node.peer_id, carol.node.peer_id) if p in final]) == 1
            for n, g in zip(everyone, groups, strict=True):
                if n.node.peer_id in final:  # reads every message it is entitled to
                    with trio.fail_after(SOON):
                        await n.service.wait_until(lambda g=g: not _unreadable(g, final))


def _settled(groups: list[Group], g: Group) -> bool:
    """Every node that believes it is a member holds what ``g`` holds, and agrees."""
    believers = [x for x in groups if x.me in x.core.state.members]
    return bool(believers) and all(
        x.core.frontier == believers[0].core.frontier
        and x.core.state.members == believers[0].core.state.members for x in believers)


def _unreadable(g: Group, final: Mapping[PeerId, object]) -> list[Event]:
    return [e for e in g.core.ordered()
            if e.kind is Kind.MESSAGE and e.author in final and e.id not in g.contents
            and not g.core.is_withdrawn(e.author, e.seq)]
