"""Groups across real nodes in one process: loopback TCP, Noise, SQLite files, both modes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.api.python import Kith, open_node
from node.group.events import Kind
from node.ids import parse_peer_id

SOON = 10.0


@asynccontextmanager
async def mesh(tmp: Path, *names: str) -> AsyncIterator[list[Kith]]:
    """Nodes that each dial all the earlier ones (a full mesh), waited until connected."""
    async with AsyncExitStack() as stack:
        nodes: list[Kith] = []
        for name in names:
            peers = [n.listen for n in nodes]
            nodes.append(await stack.enter_async_context(
                open_node(tmp / name, name=name, peers=peers)))
        with trio.fail_after(SOON):
            for a in nodes:
                for b in nodes:
                    if a is not b:
                        await a.wait_for_peer(b.peer_id)
        yield nodes


async def messages(node: Kith, group: str, count: int) -> list[dict[str, object]]:
    """Wait until ``node`` has ``count`` messages in ``group``; return its log."""
    with trio.fail_after(SOON):
        seen = 0
        async for event in node.events(group):
            seen += event["kind"] == "message"
            if seen >= count:
                break
    return node.log(group)


async def founded(nodes: list[Kith], mode: str) -> str:
    owner = nodes[0]
    group = owner.create_group("lab", mode=mode)
    for other in nodes[1:]:
        owner.add(group, other.peer_id)
    with trio.fail_after(SOON):  # every node knows every member before anyone speaks
        for n in nodes:
            g = await n.group(group)
            await n.service.wait_until(lambda g=g: len(g.core.state.members) == len(nodes))
    return group


@pytest.mark.parametrize("mode", ["private", "pairwise"])
async def test_everyone_sees_the_same_conversation_in_the_same_order(
    tmp_path: Path, mode: str
) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        group = await founded(nodes, mode)
        for round_ in range(4):
            for n in nodes:  # interleaved, so clocks are concurrent
                n.send(group, f"{n.node.name} #{round_}")
        logs = [await messages(n, group, 12) for n in nodes]
        ids = [[e["id"] for e in log] for log in logs]
        assert ids[0] == ids[1] == ids[2]
        texts = [[e["text"] for e in log if e["kind"] == "message"] for log in logs]
        assert texts[0] == texts[1] == texts[2]
        assert sorted(texts[0]) == sorted(f"{n} #{r}" for n in ("alice", "bob", "carol")
                                          for r in range(4))
        keys = [(e["lamport"], bytes(parse_peer_id(str(e["author"]))), e["seq"]) for e in logs[0]]
        assert keys == sorted(keys)
        mine = [e for e in logs[0] if e["mine"] and e["kind"] == "message"]
        expected = 1 if mode == "private" else 2  # pairwise: once per other member
        for e in mine:
            assert e["cost"]["encryptions"] == expected and e["cost"]["signatures"] == 1


async def test_removed_member_cannot_read_what_follows(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as (alice, bob, carol):
        group = await founded([alice, bob, carol], "private")
        alice.send(group, "before the removal")
        await messages(carol, group, 1)
        alice.remove(group, carol.peer_id)
        with trio.fail_after(SOON):
            g = await bob.group(group)
            await bob.service.wait_until(lambda: carol.node.peer_id not in g.core.state.members)
        secret = "after-removal-marker-7f3a"
        alice.send(group, secret)
        bob.send(group, secret + "-bob")
        await messages(bob, group, 3)
        await messages(alice, group, 3)

        # Even handed every event, carol's node cannot decrypt the new epoch.
        cg = carol.service.groups[alice.service.find(group).id]
        events = alice.service.find(group).core.ordered()

        carol.service.deliver(cg, events, alice.node.peer_id)
        texts = [e["text"] for e in carol.log(group) if e["kind"] == "message"]
        assert texts[0] == "before the removal"
        assert secret not in " ".join(t for t in texts if t)
        epochs = {e["epoch"] for e in alice.log(group) if e["kind"] == "message"}
        assert len(epochs) == 2  # alice rotated her sender key after the removal
        db = (tmp_path / "carol" / "kith.db").read_bytes()
        wal = tmp_path / "carol" / "kith.db-wal"
        assert secret.encode() not in db + (wal.read_bytes() if wal.exists() else b"")


async def test_late_joiner_reads_from_when_it_joined(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob", "dave") as (alice, bob, dave):
        group = await founded([alice, bob], "private")
        alice.send(group, "old news")
        await messages(bob, group, 1)
        alice.add(group, dave.peer_id)
        with trio.fail_after(SOON):
            await dave.group(group)
        alice.send(group, "welcome dave")
        log = await messages(dave, group, 2)
        texts = [e["text"] for e in log if e["kind"] == "message"]
        assert texts == [None, "welcome dave"]  # the old one exists but is unreadable
        bob.send(group, "hi dave")
        log = await messages(dave, group, 3)
        assert [e["text"] for e in log if e["kind"] == "message"][-1] == "hi dave"


async def test_outbox_survives_a_restart_and_nothing_is_duplicated(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        async with open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob:
            group = await founded([alice, bob], "pairwise")
            bob_id = bob.peer_id
        # bob is gone: alice writes anyway
        alice.send(group, "while you were out")
        [pending] = [e for e in alice.log(group) if e["kind"] == "message"]
        assert pending["state"] == "pending"
        async with open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob:
            assert bob.peer_id == bob_id
            log = await messages(bob, group, 1)
            assert [e["text"] for e in log if e["kind"] == "message"] == ["while you were out"]
            g = alice.service.find(group)
            with trio.fail_after(SOON):
                await alice.service.wait_until(
                    lambda: alice.log(group)[-1]["state"] == "delivered"
                )
            assert g.acked  # bob acknowledged
            ids = [e["id"] for e in bob.log(group)]
            assert len(ids) == len(set(ids)) == len(alice.log(group))


async def test_state_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        group = await founded([alice, bob], "private")
        alice.send(group, "one")
        bob.send(group, "two")
        await messages(alice, group, 2)
        before = alice.log(group)
    async with open_node(tmp_path / "alice", name="alice") as alice:
        after = alice.log(group)
        assert [(e["id"], e["text"]) for e in after] == [(e["id"], e["text"]) for e in before]
        g = alice.service.find(group)
        assert g.keys.own is not None and g.keys.own.key.index == 1  # one message sent
        assert any(e.kind is Kind.SENDER_KEY for e in g.core.ordered())


@pytest.mark.parametrize("receipts", [True, False])
async def test_read_receipts_are_compact_and_can_be_turned_off(
    tmp_path: Path, receipts: bool
) -> None:
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            open_node(tmp_path / "alice", name="alice", receipt_interval=0.05))
        bob = await stack.enter_async_context(open_node(
            tmp_path / "bob", name="bob", peers=[alice.listen], read_receipts=receipts,
            receipt_interval=0.05))
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
        group = await founded([alice, bob], "private")
        for i in range(5):
            alice.send(group, f"m{i}")
        await messages(bob, group, 5)
        bob.log(group, read=True)  # bob looks at the conversation
        g = alice.service.find(group)
        if receipts:
            with trio.fail_after(SOON):
                await alice.service.wait_until(  # bob has read each of the five
                    lambda: [bool(e["read_by"]) for e in alice.log(group)
                             if e["kind"] == "message"] == [True] * 5)
            # one receipt event for five messages, carrying one position
            receipts_seen = [e for e in g.core.ordered() if e.kind is Kind.RECEIPT]
            assert len(receipts_seen) == 1 and len(receipts_seen[0].body) < 64
        else:
            bob.service._flush_receipts()
            assert not any(e.kind is Kind.RECEIPT for e in
                           bob.service.find(group).core.ordered())
            read_by = [e["read_by"] for e in alice.log(group) if e["kind"] == "message"]
            assert read_by == [[]] * 5  # five messages, none known to be read


@pytest.mark.parametrize("share", [True, False])
async def test_share_history_lets_late_joiners_read_earlier_messages(
    tmp_path: Path, share: bool
) -> None:
    async with mesh(tmp_path, "alice", "bob", "dave") as (alice, bob, dave):
        group = alice.create_group("lab", share_history=share)
        alice.add(group, bob.peer_id)
        with trio.fail_after(SOON):
            await bob.group(group)
        alice.send(group, "old news from alice")
        await messages(bob, group, 1)
        bob.send(group, "old news from bob")
        await messages(alice, group, 2)
        alice.add(group, dave.peer_id)
        alice.send(group, "welcome dave")
        expected = (["old news from alice", "old news from bob"] if share else [None, None])
        with trio.fail_after(SOON):
            await dave.group(group)
            await dave.service.wait_until(
                lambda: texts_of(dave, group) == [*expected, "welcome dave"])


def texts_of(node: Kith, group: str) -> list[object]:
    return [e["text"] for e in node.log(group) if e["kind"] == "message"]


async def test_a_long_burst_paces_itself_and_a_long_log_can_be_read(tmp_path: Path) -> None:
    from node.api import client, group_ops

    async with mesh(tmp_path, "alice", "bob", "carol") as (alice, bob, carol):
        group = await founded([alice, bob, carol], "private")
        before = {p: id(c) for p, c in alice.node.connections.items()}
        last = await group_ops.OPS["send"](alice.app, {"group": group, "text": "burst",
                                                        "count": 600})
        assert last["text"] == "burst #600"
        await messages(bob, group, 600)
        await messages(carol, group, 600)
        # nobody was dropped as "too slow": the very same channels are up
        assert {p: id(c) for p, c in alice.node.connections.items()} == before
        events = await trio.to_thread.run_sync(
            lambda: client.call(alice.app.data_dir.control_socket, "log", group=group))
        assert sum(e["kind"] == "message" for e in events) == 600
