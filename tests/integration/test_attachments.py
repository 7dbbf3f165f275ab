"""Attachments across real nodes over loopback TCP: sizes, relays, corruption, caps, floods."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.api.python import Kith, open_node
from node.errors import KithError
from node.files.attachment import CHUNK_SIZE
from node.group.events import EventId, GroupId
from node.service import chunk_serving
from node.service import file_fetch as files_module
from node.service.files import FileService
from node.wire.messages import ChunkMessage, WantMessage, encode_message
from tests.integration import LogWatch
from tests.integration.test_groups import SOON, founded, mesh

MiB = 1024 * 1024


@asynccontextmanager
async def nodes_with(tmp: Path, **configs: dict[str, Any]) -> AsyncIterator[list[Kith]]:
    """Like ``mesh``, with a config per node (keyword: name)."""
    async with AsyncExitStack() as stack:
        nodes: list[Kith] = []
        for name, config in configs.items():
            peers = [n.listen for n in nodes]
            nodes.append(await stack.enter_async_context(
                open_node(tmp / name, name=name, peers=peers, **config)))
        with trio.fail_after(SOON):
            for a in nodes:
                for b in nodes:
                    if a is not b:
                        await a.wait_for_peer(b.peer_id)
        yield nodes


def files_of(node: Kith) -> FileService:
    assert node.service.files is not None
    return node.service.files


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def complete(node: Kith, group: str, event: str, within: float = SOON) -> dict[str, Any]:
    """Wait until ``node`` holds the whole file of ``event``; its status."""
    with trio.fail_after(within):
        g = await node.group(group)
        await node.service.wait_until(lambda: g.core.get(EventId(bytes.fromhex(event)))
                                      is not None)
        files = node.service.files
        assert files is not None
        await node.service.wait_until(
            lambda: (t := files.transfers.get(EventId(bytes.fromhex(event)))) is not None
            and t.state == "complete")
    return node.file_status(group, event)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1])
async def test_small_files_arrive_whole(tmp_path: Path, size: int) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        source = make_file(tmp_path / "notes.bin", size)
        sent = await alice.send_file(group, source, "here you go")
        assert sent["file"]["state"] == "complete" and sent["text"] == "here you go"
        status = await complete(bob, group, sent["id"])
        assert (status["name"], status["size"], status["have"]) == (
            "notes.bin", size, -(-size // CHUNK_SIZE))
        out = tmp_path / "out"
        out.mkdir()
        saved = await bob.save_file(group, sent["id"], out)
        assert saved == out / "notes.bin" and saved.read_bytes() == source.read_bytes()
        again = await bob.save_file(group, sent["id"], out)  # never overwrites
        assert again == out / "notes (1).bin" and again.read_bytes() == source.read_bytes()


async def test_fifty_mib_goes_through_without_dropping_anyone(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        source = make_file(tmp_path / "big.iso", 50 * MiB)
        sent = await alice.send_file(group, source)
        assert sent["file"]["chunks"] == 200
        status = await complete(bob, group, sent["id"], within=120)
        assert status["bytes_have"] == 50 * MiB and status["bad_chunks"] == 0
        assert bob.node.peer_id in alice.node.connections  # never dropped as "too slow"
        saved = await bob.save_file(group, sent["id"], tmp_path)
        assert saved.name == "big (1).iso"
        assert saved.read_bytes() == source.read_bytes()


async def test_a_corrupted_chunk_from_one_member_and_the_right_one_from_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: LogWatch
) -> None:
    async with mesh(tmp_path, "alice", "carol", "bob") as nodes:
        alice, carol, bob = nodes
        group = alice.create_group("lab", share_history=True)  # bob reads what came before
        alice.add(group, carol.peer_id)
        source = make_file(tmp_path / "photo.jpg", 3 * CHUNK_SIZE + 5)
        sent = await alice.send_file(group, source)
        await complete(carol, group, sent["id"])
        # From now on alice's node hands out damaged chunks (a lying or broken member).
        real_get = files_of(alice).chunks.get

        def damaged(address: bytes) -> bytes | None:
            data = real_get(address)
            return None if data is None else bytes([data[0] ^ 1]) + data[1:]

        monkeypatch.setattr(files_of(alice).chunks, "get", damaged)
        alice.add(group, bob.peer_id)
        status = await complete(bob, group, sent["id"])
        assert status["bad_chunks"] >= 1  # alice was asked first (the author) and lied
        await logs.wait_for("does not hash to its address; asking another member")
        saved = await bob.save_file(group, sent["id"], tmp_path / "bob")
        assert saved.read_bytes() == source.read_bytes()


async def test_chunks_are_relayed_by_a_member_that_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "RETRY_AFTER", 0.1)
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        alice, bob, carol = nodes
        group = await founded(nodes, "private")
        real_queue = files_of(alice).server._serve_queue
        refused = carol.node.peer_id
        monkeypatch.setattr(files_of(alice).server, "_serve_queue",
                            lambda peer: None if peer == refused else real_queue(peer))
        source = make_file(tmp_path / "talk.pdf", 2 * CHUNK_SIZE)
        sent = await alice.send_file(group, source)
        await complete(bob, group, sent["id"])
        await complete(carol, group, sent["id"])  # alice said no: every chunk came from bob
        saved = await carol.save_file(group, sent["id"], tmp_path / "carol")
        assert saved.read_bytes() == source.read_bytes()


async def test_the_size_cap(tmp_path: Path) -> None:
    async with nodes_with(tmp_path, alice={"max_file_size": 3 * CHUNK_SIZE},
                          bob={"max_file_size": CHUNK_SIZE}) as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        with pytest.raises(KithError, match=r"huge.bin is 768.0 KiB, over this node's limit "
                           r"of 768.0 KiB \(kith run --max-file-size\)"):
            await alice.send_file(group, make_file(tmp_path / "huge.bin", 3 * CHUNK_SIZE + 1))
        sent = await alice.send_file(group, make_file(tmp_path / "mid.bin", 2 * CHUNK_SIZE))
        with trio.fail_after(SOON):
            await bob.service.wait_until(
                lambda: EventId(bytes.fromhex(sent["id"])) in files_of(bob).transfers)
        assert bob.file_status(group, sent["id"])["state"] == "too large"
        with pytest.raises(KithError, match=r"over this node's limit.*not fetched"):
            await bob.save_file(group, sent["id"], tmp_path)
        assert not list((tmp_path / "bob" / "chunks").rglob("*"))  # nothing was fetched


async def test_deleting_the_message_deletes_its_chunks(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        sent = await alice.send_file(group, make_file(tmp_path / "oops.txt", CHUNK_SIZE + 1))
        await complete(bob, group, sent["id"])
        chunk_files = [n / "chunks" for n in (tmp_path / "alice", tmp_path / "bob")]
        assert all(len([p for p in d.rglob("*") if p.is_file()]) == 2 for d in chunk_files)
        alice.delete(group, sent["id"])
        with trio.fail_after(SOON):
            await bob.service.wait_until(
                lambda: files_of(bob).transfers[EventId(bytes.fromhex(sent["id"]))].state
                == "deleted")
        for node, d in zip(nodes, chunk_files, strict=True):
            assert not [p for p in d.rglob("*") if p.is_file()]
            assert node.service.store.chunks() == []
        with pytest.raises(KithError, match="deleted"):
            await bob.save_file(group, sent["id"], tmp_path)


async def test_a_chunk_flood_is_dropped_and_the_node_keeps_serving(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with mesh(tmp_path, "alice", "bob", "mallory") as nodes:
        alice, bob, mallory = nodes
        group = await founded(nodes, "private")
        gid = GroupId(bytes.fromhex(group))
        conn = mallory.node.connections[alice.node.peer_id]
        junk = bytes(CHUNK_SIZE)
        for i in range(chunk_serving.FLOOD_BUDGET + 8):  # chunks alice never asked for
            conn.send_nowait(encode_message(ChunkMessage(gid, i.to_bytes(32, "big"), junk)))
            await conn.wait_queue_below(4)
        await logs.wait_for("did not ask for")
        await logs.wait_for("closing the channel to .*: it sent over 32 chunks")
        assert alice.service.store.chunks() == []
        assert not [p for p in (tmp_path / "alice" / "chunks").rglob("*") if p.is_file()]
        # alice still serves the others, and answers a want of unknown chunks with nochunk
        source = make_file(tmp_path / "after.bin", CHUNK_SIZE * 2)
        sent = await alice.send_file(group, source)
        await complete(bob, group, sent["id"])
        saved = await bob.save_file(group, sent["id"], tmp_path / "bob")
        assert saved.read_bytes() == source.read_bytes()


async def test_wants_from_outsiders_and_for_unknown_chunks_get_nochunk(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob", "eve") as nodes:
        alice, bob, eve = nodes
        group = await founded(nodes[:2], "private")
        sent = await alice.send_file(group, make_file(tmp_path / "x.bin", 10))
        await complete(bob, group, sent["id"])
        address = files_of(alice).transfers[EventId(bytes.fromhex(sent["id"]))].ref.chunks[0]
        gid = GroupId(bytes.fromhex(group))
        seen: list[object] = []
        arrived = trio.Event()
        real = files_of(eve).on_message

        async def spy(conn: Any, message: Any) -> None:
            seen.append(message)
            arrived.set()
            await real(conn, message)

        files_of(eve).on_message = spy  # type: ignore[method-assign]
        conn = eve.node.connections[alice.node.peer_id]
        conn.send_nowait(encode_message(WantMessage(gid, (address, bytes(32)))))
        with trio.fail_after(SOON):
            await arrived.wait()
        [answer] = seen
        assert type(answer).__name__ == "NoChunkMessage"
        assert answer.addresses == (address, bytes(32))  # type: ignore[attr-defined]


async def test_pairwise_groups_carry_files_too(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "pairwise")
        source = make_file(tmp_path / "p.bin", CHUNK_SIZE + 3)
        sent = await alice.send_file(group, source)
        await complete(bob, group, sent["id"])
        assert (await bob.save_file(group, sent["id"], tmp_path / "bob")).read_bytes() == \
            source.read_bytes()


async def test_a_file_sent_while_a_member_was_away_arrives_and_survives_restarts(
    tmp_path: Path
) -> None:
    source = make_file(tmp_path / "minutes.txt", 2 * CHUNK_SIZE + 1)
    async with open_node(tmp_path / "alice", name="alice") as alice:
        async with open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob:
            with trio.fail_after(SOON):
                await alice.wait_for_peer(bob.peer_id)
            group = await founded([alice, bob], "private")
        sent = await alice.send_file(group, source)  # bob is away
        async with open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob:
            await complete(bob, group, sent["id"])
        async with open_node(tmp_path / "bob", name="bob") as bob:  # alone: from its store
            assert bob.file_status(group, sent["id"])["state"] == "complete"
            out = tmp_path / "out"
            out.mkdir()
            saved = await bob.save_file(group, sent["id"], out)
            assert saved.read_bytes() == source.read_bytes()
            # A chunk damaged on disk is noticed when read, and fetched again later.
            files = files_of(bob)
            address = files.transfers[EventId(bytes.fromhex(sent["id"]))].ref.chunks[1]
            files.chunks.path(address).write_bytes(b"bit rot")
            with pytest.raises(KithError, match="chunk 1 is missing or damaged"):
                await bob.save_file(group, sent["id"], out)
            assert bob.file_status(group, sent["id"])["state"] == "fetching"
            assert [p.name for p in out.iterdir()] == ["minutes.txt"]  # no half-written file
