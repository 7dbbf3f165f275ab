"""The chat backend and session against real in-process nodes, over the real control socket.

Nothing sleeps: tests wait for a session refresh or a node event under
``trio.fail_after``. A fake node that accepts and never answers shows that a
slow node gives a status line error, not a frozen client.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.api.python import Kith, open_node
from node.chat.backend import NodeClient
from node.chat.commands import Request
from node.chat.model import ChatModel, Notification
from node.chat.session import ChatSession
from node.errors import KithError, NotRunningError

SOON = 10.0


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kc-") as path:  # short: socket paths
        yield Path(path)


@asynccontextmanager
async def two_nodes(tmp: Path) -> AsyncIterator[tuple[Kith, Kith]]:
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            open_node(tmp / "alice", name="alice", receipt_interval=0.05))
        bob = await stack.enter_async_context(
            open_node(tmp / "bob", name="bob", peers=[alice.listen], receipt_interval=0.05))
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
            await bob.wait_for_peer(alice.peer_id)
        yield alice, bob


def socket_of(node: Kith) -> Path:
    return node.app.data_dir.control_socket


@asynccontextmanager
async def chat_session(node: Kith) -> AsyncIterator[tuple[ChatSession, list[Notification]]]:
    notes: list[Notification] = []
    session = ChatSession(NodeClient(socket_of(node)), ChatModel(), notify=notes.append,
                          poll=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        yield session, notes
        nursery.cancel_scope.cancel()


async def until(session: ChatSession, predicate: Callable[[], bool], what: str) -> None:
    """Wait for refreshes until ``predicate()`` holds (at most ``SOON`` s)."""
    try:
        with trio.fail_after(SOON):
            while not predicate():
                await session.wait_refreshed()
    except trio.TooSlowError:
        m = session.model
        raise AssertionError(f"no {what}; status {m.status!r}, events {m.events}") from None


# -- the client ----------------------------------------------------------------------


async def test_call_and_errors(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice:
        client = NodeClient(socket_of(alice))
        me = await client.call("id")
        assert me["peer_id"] == alice.peer_id and me["name"] == "alice"
        with pytest.raises(KithError, match="unknown op 'nope'"):
            await client.call("nope")
        with pytest.raises(KithError, match="no group"):
            await client.call("log", group="nothere")
    with pytest.raises(NotRunningError):
        await NodeClient(tmp / "alice" / "control.sock").call("id")


async def test_follow_gives_the_log_then_new_events(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice:
        group = alice.create_group("team")
        client = NodeClient(socket_of(alice))
        seen: list[Any] = []
        got = trio.Event()

        def on_item(item: Any) -> None:
            seen.append(item)
            got.set()

        async with trio.open_nursery() as nursery:
            with trio.fail_after(SOON):
                first = await nursery.start(lambda task_status: client.follow(
                    on_item, "log", group=group, task_status=task_status))
                assert [e["kind"] for e in first] == ["create"]
                alice.send(group, "live")
                await got.wait()
            assert seen[0]["text"] == "live"
            nursery.cancel_scope.cancel()


async def test_a_node_that_does_not_answer_is_a_status_line_not_a_freeze(tmp: Path) -> None:
    path = tmp / "control.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(os.fspath(path))
    sock.listen(4)  # accepts connections (backlog), never answers
    try:
        client = NodeClient(path, timeout=0.2)
        with trio.fail_after(SOON), pytest.raises(KithError, match=r"did not answer group\.list"):
            await client.call("group.list")
        model = ChatModel(me="a" * 56)
        model.set_groups([{"id": "ab" * 16, "name": "team"}])
        timed_out = trio.Event()

        def on_change() -> None:
            if "did not answer send" in model.status:
                timed_out.set()

        session = ChatSession(client, model, on_change=on_change)
        async with trio.open_nursery() as nursery:
            session._nursery = nursery
            session.submit("hello")  # returns at once: the request runs in a task
            assert not timed_out.is_set()
            with trio.fail_after(SOON):
                await timed_out.wait()
    finally:
        sock.close()


# -- the session, two nodes ------------------------------------------------------------


async def test_a_conversation_through_the_session(tmp: Path) -> None:
    async with two_nodes(tmp) as (alice, bob), chat_session(alice) as (session, notes):
        model = session.model
        assert model.me == alice.peer_id and model.my_name == "alice"
        session.submit("/create team")
        await until(session, lambda: model.current_group is not None
                    and model.current_group.name == "team", "group")
        group = model.current
        assert group is not None
        await until(session, lambda: bool(model.peers), "peers")
        session.submit("/add bob")
        await until(session, lambda: len(model.members) == 2, "bob as member")
        session.submit("hello bob")
        await until(session, lambda: any(e.get("text") == "hello bob" for e in model.events),
                    "own message")
        with trio.fail_after(SOON):
            await bob.group(group)
            await bob.service.wait_until(
                lambda: any(e["text"] == "hello bob" for e in bob.log(group)))
        assert notes == []  # own messages never notify
        bob.log(group, read=True)  # bob reads: alice sees the read mark
        await until(session, lambda: any(e.get("read_by") == [bob.peer_id]
                                         for e in model.events), "read mark")
        bob.send(group, "hi alice")
        await until(session, lambda: bool(notes), "notification")
        assert (notes[0].author, notes[0].text, notes[0].group) == ("bob", "hi alice", "team")
        await until(session, lambda: model.events[-1].get("text") == "hi alice", "bob's message")
        assert model.handle_of(model.events[-1]["id"]) == 2


async def test_unknown_ops_say_the_node_does_not_support_them(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, \
            chat_session(alice) as (session, _):
        result = await session.execute(Request("frobnicate", {}, "done", "/frob"))
        assert result is None
        assert session.model.status == "this node does not support /frob yet"
        await session.execute(Request("group.members", {"group": "zzz"}, "", "/members"))
        assert session.model.status.startswith("/members: no group")


async def test_peers_and_help_become_notices(tmp: Path) -> None:
    async with two_nodes(tmp) as (alice, _bob), chat_session(alice) as (session, _):
        await session.execute(Request("peers", {}, "", "/peers", then="peers"))
        assert any("bob" in line and "online" in line for line in session.model.notices)
        session.submit("/help")
        assert any("/reply N TEXT" in line for line in session.model.notices)


async def test_mute_commands_local_and_admin(tmp: Path) -> None:
    async with two_nodes(tmp) as (alice, bob), chat_session(alice) as (session, notes):
        model = session.model
        group = alice.create_group("team")
        alice.add(group, bob.peer_id)
        await until(session, lambda: len(model.members) == 2, "members")
        session.submit("/mute")
        await until(session, lambda: model.current_group is not None
                    and model.current_group.muted, "local mute")
        assert model.status == "notifications off for this group"
        session.submit("/mute @bob 5")
        await until(session, lambda: any(m.muted for m in model.members), "bob muted")
        assert model.status == "muted @bob for 5 min"
        with trio.fail_after(SOON):
            await bob.group(group)
            await bob.service.wait_until(lambda: any(m["muted"] for m in bob.members(group)
                                                     if m["peer_id"] == bob.peer_id))
        with pytest.raises(KithError):
            bob.send(group, "can I still talk?")
        session.submit("/unmute")
        await until(session, lambda: model.current_group is not None
                    and not model.current_group.muted, "local unmute")
        assert notes == []
