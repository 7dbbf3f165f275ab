"""A node whose store cannot write pauses, refuses commands, and resumes by itself.

Two real nodes in one process (loopback TCP, Noise, SQLite files). Bob's store is
made unable to write by a fault injected into SQLite itself (``tests.store.faults``:
the file cannot grow, as on a full disk, or another program holds the write lock)
while alice sends to him. Bob must stay up and connected, refuse his own commands
with one clear line, acknowledge nothing he has not stored, and, once the fault is
gone, store and show every message exactly once and acknowledge it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.api import client
from node.api.python import Kith, open_node
from node.errors import KithError, StoragePausedError
from node.group.events import EventId
from node.ids import PeerId
from node.store import Store
from tests.store.faults import disk_full, locked

SOON = 10.0
BIG = "x" * 3000  # each message needs new pages in bob's file


@asynccontextmanager
async def pair(tmp: Path) -> AsyncIterator[tuple[Kith, Kith, str]]:
    """alice and bob, connected, in a private group alice made."""
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(open_node(tmp / "alice", name="alice"))
        bob = await stack.enter_async_context(
            open_node(tmp / "bob", name="bob", peers=[alice.listen]))
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
            group = alice.create_group("lab")
            alice.add(group, bob.peer_id)
            g = await bob.group(group)
            await bob.service.wait_until(lambda: len(g.core.state.members) == 2)
        yield alice, bob, group


def texts(node: Kith, group: str) -> list[str]:
    return [str(e["text"]) for e in node.log(group) if e["kind"] == "message"]


def delivered_to(node: Kith, group: str, peer: str) -> set[str]:
    return {str(e["text"]) for e in node.log(group)
            if e["kind"] == "message" and peer in e.get("delivered_to", ())}


FAULTS: dict[str, tuple[Callable[[Store], AbstractContextManager[None]], str]] = {
    "disk full": (disk_full, "cannot write: disk full; kith will resume when space returns"),
    "locked": (locked, "cannot write: database locked by another program; kith will resume"
                       " when the database is free again"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_the_node_pauses_refuses_commands_and_resumes_with_every_message_once(
    tmp_path: Path, fault: str,
) -> None:
    inject, line = FAULTS[fault]
    async with pair(tmp_path) as (alice, bob, group):
        with trio.fail_after(SOON):
            alice.send(group, "before")
            await bob.service.wait_until(lambda: texts(bob, group) == ["before"])
            await alice.service.wait_until(
                lambda: delivered_to(alice, group, bob.peer_id) == {"before"})
        channel = alice.node.connections[bob.node.peer_id]
        sent = [f"during {i} {BIG}" for i in range(5)]
        with inject(bob.service.store):
            for text in sent:
                alice.send(group, text)
            with trio.fail_after(SOON):
                await bob.service.wait_until(lambda: bob.service.storage_paused is not None)
                # every message has reached bob's node (alice's last one is behind the others)
                await trio.testing.wait_all_tasks_blocked(0.05)
            # a command gets one clear line, on the Python API and on the control socket
            with pytest.raises(StoragePausedError) as refused:
                bob.send(group, "hello?")
            assert str(refused.value) == line
            with pytest.raises(KithError) as answered:
                await trio.to_thread.run_sync(lambda: client.call(
                    bob.app.data_dir.control_socket, "send", group=group, text="hello?"))
            assert str(answered.value) == line
            # nothing unstored is acknowledged, and bob stored none of it
            assert delivered_to(alice, group, bob.peer_id) == {"before"}
            assert [r.text for r in _stored(bob) if r.text is not None] == ["before"]
            # bob is alive and still connected
            assert alice.node.connections.get(bob.node.peer_id) is channel
        with trio.fail_after(SOON):  # the fault is gone: bob resumes by himself
            await bob.service.wait_until(lambda: bob.service.storage_paused is None)
            await bob.service.wait_until(lambda: texts(bob, group) == ["before", *sent])
            await alice.service.wait_until(
                lambda: delivered_to(alice, group, bob.peer_id) == {"before", *sent})
        stored = [r.text for r in _stored(bob) if r.text is not None]
        assert stored == ["before", *sent]  # each once, in order
        assert alice.node.connections.get(bob.node.peer_id) is channel
        bob.send(group, "back")  # and bob can write again
        with trio.fail_after(SOON):
            await alice.service.wait_until(lambda: "back" in texts(alice, group))


def _stored(node: Kith) -> list:  # type: ignore[type-arg]
    store = node.service.store
    return [row for g in store.groups() for row in store.events(g.id)]


async def test_delivery_receipts_that_cannot_be_saved_wait_for_the_retry(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alice, _bob, group):
        event = alice.send(group, "ack me")
        gid, eid = (await alice.group(group)).id, EventId(bytes.fromhex(event["id"]))
        late = PeerId(b"\x0c" * 32)
        service = alice.service
        with locked(service.store):
            # one receipt gathered since the last beat (the 0.5 s batch), as an ack leaves it
            service._unsaved_deliveries.append((gid, eid, late, 5.0))
            assert not service.save_deliveries()
            assert service.storage_paused == "database locked by another program"
            with pytest.raises(StoragePausedError):
                alice.send(group, "not now")
        with trio.fail_after(SOON):  # the writer task retries and saves it
            await service.wait_until(lambda: service.storage_paused is None)
        assert service.store.deliveries(gid)[eid][late] == 5.0


async def test_a_message_whose_own_write_failed_is_kept_and_sent_once_stored(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alice, bob, group):
        with disk_full(alice.service.store):
            with pytest.raises(StoragePausedError) as refused:
                alice.send(group, BIG)  # the core has authored it; the store cannot hold it
            assert str(refused.value) == (FAULTS["disk full"][1] + ", and send this then")
            with pytest.raises(StoragePausedError):
                alice.send(group, "second")  # refused up front: never authored
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert texts(bob, group) == []  # nothing unstored went out
        with trio.fail_after(SOON):
            await alice.service.wait_until(lambda: alice.service.storage_paused is None)
            await bob.service.wait_until(lambda: texts(bob, group) == [BIG])
        alice.send(group, "third")
        with trio.fail_after(SOON):
            await bob.service.wait_until(lambda: texts(bob, group) == [BIG, "third"])
        seqs = [r.seq for r in _stored(alice) if r.author == alice.node.peer_id]
        assert len(seqs) == len(set(seqs))  # no seq used twice
        assert [r.text for r in _stored(alice) if r.text is not None] == [BIG, "third"]
