"""Anti-entropy: members catch up from whoever they meet, partitions heal, gaps show."""

from __future__ import annotations

from pathlib import Path

import trio

from node.api.python import Kith, open_node
from node.net.address import DialTarget, parse_hostport
from tests.integration.test_groups import SOON, founded, mesh, messages


async def connect(a: Kith, b: Kith) -> None:
    host, port = parse_hostport(b.listen)
    await a.node.connect(DialTarget(host, port))
    with trio.fail_after(SOON):
        await a.wait_for_peer(b.peer_id)
        await b.wait_for_peer(a.peer_id)


def texts(node: Kith, group: str) -> list[object]:
    return [e["text"] for e in node.log(group) if e["kind"] == "message"]


async def test_a_member_catches_up_from_someone_else(tmp_path: Path) -> None:
    """carol was away; she meets only bob, who relays alice's messages (private mode)."""
    async with mesh(tmp_path, "alice", "bob", "carol") as (alice, bob, carol):
        group = await founded([alice, bob, carol], "private")
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        for i in range(30):
            alice.send(group, f"alice {i}")
        bob.send(group, "bob too")
        await messages(bob, group, 31)
        async with open_node(tmp_path / "carol", name="carol") as carol:
            await connect(carol, bob)  # carol never meets alice
            log = await messages(carol, group, 31)
            assert texts(carol, group) == texts(bob, group)
            assert len(texts(carol, group)) == 31 and None not in texts(carol, group)
            assert [e["id"] for e in log] == [e["id"] for e in bob.log(group)]


async def test_partition_heals_and_everyone_converges(tmp_path: Path) -> None:
    async with mesh(tmp_path, "a", "b", "c", "d") as nodes:
        group = await founded(nodes, "private")
    async with mesh(tmp_path, "a", "b") as (a, b), mesh(tmp_path, "c", "d") as (c, d):
        for i in range(5):  # both halves keep talking
            a.send(group, f"a{i}")
            c.send(group, f"c{i}")
        await messages(b, group, 5)
        await messages(d, group, 5)
        await connect(b, c)  # heal through one link only
        logs = [await messages(n, group, 10) for n in (a, b, c, d)]
        ids = [[e["id"] for e in log] for log in logs]
        assert ids[0] == ids[1] == ids[2] == ids[3]
        assert sorted(t for t in texts(a, group) if t) == sorted(
            [f"a{i}" for i in range(5)] + [f"c{i}" for i in range(5)]
        )


async def test_pairwise_message_relayed_without_its_copy_waits_for_the_author(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        group = await founded(nodes, "pairwise")
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        alice.send(group, "only alice holds carol's copy")
        await messages(bob, group, 1)
    async with mesh(tmp_path, "bob", "carol") as (bob, carol):
        await messages(carol, group, 1)
        assert texts(carol, group) == [None]  # relayed by bob: the event, not carol's copy
    async with mesh(tmp_path, "alice", "carol") as (alice, carol):
        g = await carol.group(group)
        with trio.fail_after(SOON):  # alice's outbox pushes carol's copy
            await carol.service.wait_until(lambda: texts(carol, group) == [
                "only alice holds carol's copy"])
        assert g.texts


async def test_gap_is_visible_until_sync_fills_it(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        group = await founded(nodes, "pairwise")
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        for i in range(3):
            alice.send(group, f"a{i}")
        await messages(bob, group, 3)
        bob.send(group, "bob saw alice's three")
        await messages(alice, group, 4)
    async with open_node(tmp_path / "carol", name="carol") as carol:
        # hand carol only bob's message: it depends on alice's three
        g_bob_events = None
        async with open_node(tmp_path / "bob", name="bob") as bob:
            gb = bob.service.find(group)
            g_bob_events = [e for e in gb.core.ordered() if e.author == bob.node.peer_id]
        gc = carol.service.find(group)
        carol.service.deliver(gc, g_bob_events, bob.node.peer_id)
        [view] = [g for g in carol.groups() if g["id"] == gc.id.hex()]
        assert list(view["missing"].values()) == [3]  # alice's three, named by id or name
        async with open_node(tmp_path / "alice", name="alice", peers=[carol.listen]) as alice:
            await messages(carol, group, 4)
            [view] = [g for g in carol.groups() if g["id"] == gc.id.hex()]
            assert view["missing"] == {}
            assert alice.peer_id
