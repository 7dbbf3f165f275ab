"""Nodes in one process over real loopback TCP and real Noise: connect, talk, recover."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
import trio

from node.channel.core import Event, PingReceived, _NeedData
from node.config import Config
from node.crypto.keys import IdentityKey
from node.errors import ConfigError
from node.ids import short_id
from node.net.connection import SHUTDOWN_REASON, PeerConnection
from node.node import Node
from tests.integration import (
    NODE_LOG,
    SOON,
    LogWatch,
    RunningNode,
    exchange,
    one_line,
    start_node,
    wait_connected,
)


def socket_of(conn: PeerConnection) -> trio.socket.SocketType:
    transport = conn.stream.transport
    assert isinstance(transport, trio.SocketStream)
    return transport.socket


def only_connection(running: RunningNode, other: RunningNode) -> PeerConnection:
    assert list(running.node.connections) == [other.peer_id]
    return running.node.connections[other.peer_id]


async def test_dial_gives_each_side_one_channel(nursery: trio.Nursery) -> None:
    a = await start_node(nursery, "alice")
    b = await start_node(nursery, "bob", peers=[a.target()])
    await wait_connected((a, b), (b, a))

    a_conn, b_conn = only_connection(a, b), only_connection(b, a)
    a_info, b_info = a_conn.info, b_conn.info
    assert (a_info.peer_id, a_info.name, a_info.direction) == (b.peer_id, "bob", "inbound")
    assert (b_info.peer_id, b_info.name, b_info.direction) == (a.peer_id, "alice", "outbound")
    assert a_info.initiator == b_info.initiator == b.peer_id
    assert b_info.address == f"127.0.0.1:{a.port}"
    # A records where B came from: B's end of the very same TCP connection.
    b_local = socket_of(b_conn).getsockname()
    assert a_info.address == f"{b_local[0]}:{b_local[1]}"
    assert socket_of(a_conn).getpeername() == b_local
    assert [i.peer_id for i in a.node.peers()] == [b.peer_id]
    assert [i.peer_id for i in b.node.peers()] == [a.peer_id]


async def test_connect_checks_the_expected_peer_id(nursery: trio.Nursery) -> None:
    a = await start_node(nursery, "alice")
    b = await start_node(nursery, "bob")
    info = await b.node.connect(a.target(expected=a.peer_id))
    assert (info.peer_id, info.name, info.direction) == (a.peer_id, "alice", "outbound")
    await wait_connected((a, b))
    await exchange(a, b)


async def test_messages_arrive_intact_and_in_order(nursery: trio.Nursery) -> None:
    a = await start_node(nursery, "alice")
    b = await start_node(nursery, "bob", peers=[a.target()])
    await wait_connected((a, b), (b, a))
    big = os.urandom(300 * 1024)
    cap = os.urandom(a.node.config.max_message_size)  # exactly the cap is allowed
    for message in (big, b"", b"x", cap):
        assert await b.node.send_to(a.peer_id, message)
    for message in (big, b"", b"x", cap):
        assert await a.inbox.get() == (b.peer_id, message)
    # The other direction uses the other cipher state.
    assert await a.node.send_to(b.peer_id, big)
    assert await b.inbox.get() == (a.peer_id, big)


async def test_send_to_an_unknown_peer_is_false(nursery: trio.Nursery) -> None:
    a = await start_node(nursery, "alice")
    assert not await a.node.send_to(IdentityKey.generate().peer_id, b"hello")


def loser_pattern(other: RunningNode) -> str:
    """How a node logs the end of the duplicate channel to ``other`` it did not keep."""
    sid = short_id(other.peer_id)
    return rf"^closing duplicate channel to {sid} |^disconnected from {sid} .*duplicate"


@pytest.mark.parametrize("round_", range(8))
async def test_simultaneous_dials_keep_the_same_channel(logs: LogWatch, round_: int) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, f"a{round_}")
        b = await start_node(nursery, f"b{round_}")
        async with trio.open_nursery() as race:
            race.start_soon(a.node.connect, b.target())
            race.start_soon(b.node.connect, a.target())
        # Each node had two channels; each ends exactly one of them (the loser).
        for other in (b, a):  # A's loser is a channel to B, B's a channel to A
            await logs.wait_for(loser_pattern(other), logger=NODE_LOG)
        a_conn, b_conn = only_connection(a, b), only_connection(b, a)
        # Both sides kept the channel dialled by the smaller peer id: the same TCP connection.
        assert a_conn.info.initiator == b_conn.info.initiator == min(a.peer_id, b.peer_id)
        assert socket_of(a_conn).getsockname() == socket_of(b_conn).getpeername()
        assert socket_of(a_conn).getpeername() == socket_of(b_conn).getsockname()
        await exchange(a, b)
        for other in (b, a):
            assert len(logs.matching(loser_pattern(other), logger=NODE_LOG)) == 1
        assert a_conn.close_reason == b_conn.close_reason == ""
        nursery.cancel_scope.cancel()


async def test_dialler_reconnects_to_a_restarted_peer(
    nursery: trio.Nursery, logs: LogWatch
) -> None:
    identity = IdentityKey.generate()
    a = await start_node(nursery, "alice", identity=identity)
    port = a.port
    b = await start_node(nursery, "bob", peers=[a.target()], redial_initial=0.05, redial_max=0.1)
    await wait_connected((a, b), (b, a))
    first = b.node.connections[a.peer_id]

    await a.stop()
    with trio.fail_after(SOON):
        await b.node.wait_until(lambda: a.peer_id not in b.node.connections)
    assert first.close_reason == f"peer left ({SHUTDOWN_REASON})"

    a_again = await start_node(nursery, "alice", identity=identity, listen_port=port)
    await wait_connected((b, a_again), (a_again, b))  # nobody asked B to redial
    assert b.node.connections[a.peer_id] is not first
    await exchange(a_again, b)


def count_pings(conn: PeerConnection, wanted: int) -> trio.Event:
    """An event set once ``conn`` has received ``wanted`` keepalives."""
    reached = trio.Event()
    channel = conn.stream.channel
    original = channel.next_event
    seen = 0

    def next_event() -> Event | _NeedData:
        nonlocal seen
        event = original()
        if isinstance(event, PingReceived):
            seen += 1
            if seen >= wanted:
                reached.set()
        return event

    channel.next_event = next_event  # type: ignore[method-assign]
    return reached


async def test_keepalive_keeps_an_idle_channel_up(nursery: trio.Nursery) -> None:
    idle_timeout = 0.4
    timing: dict[str, Any] = {"keepalive_interval": 0.05, "idle_timeout": idle_timeout}
    a = await start_node(nursery, "alice", **timing)
    b = await start_node(nursery, "bob", peers=[a.target()], **timing)
    await wait_connected((a, b), (b, a))
    a_conn, b_conn = a.node.connections[b.peer_id], b.node.connections[a.peer_id]
    started = trio.current_time()
    a_pinged, b_pinged = count_pings(a_conn, 20), count_pings(b_conn, 20)
    with trio.fail_after(SOON):
        await a_pinged.wait()
        await b_pinged.wait()
    # No application data for more than twice the idle timeout, and still connected.
    assert trio.current_time() - started > 2 * idle_timeout
    assert a.node.connections[b.peer_id] is a_conn and a_conn.close_reason == ""
    assert b.node.connections[a.peer_id] is b_conn and b_conn.close_reason == ""
    await exchange(a, b)


async def test_watchdog_drops_a_silent_peer(nursery: trio.Nursery, logs: LogWatch) -> None:
    # B never sends a keepalive (and B hears A's, so B itself is content).
    a = await start_node(nursery, "alice", keepalive_interval=0.05, idle_timeout=0.3)
    started = trio.current_time()  # everything A will hear from B comes after this
    b = await start_node(
        nursery,
        "bob",
        peers=[a.target()],
        keepalive_interval=60.0,
        idle_timeout=60.0,
        redial_initial=30.0,
        redial_max=30.0,
    )
    await wait_connected((a, b))
    [line] = await logs.wait_for(
        rf"disconnected from {short_id(b.peer_id)} \(bob\): no data from peer for 0.3 s",
        logger=NODE_LOG,
    )
    assert trio.current_time() - started >= 0.3
    one_line([line])
    # A said why in its goodbye.
    await logs.wait_for(
        rf"disconnected from {short_id(a.peer_id)} \(alice\): "
        r"peer left \(no data from peer for 0.3 s\)",
        logger=NODE_LOG,
    )


async def test_shutdown_says_goodbye(nursery: trio.Nursery, logs: LogWatch) -> None:
    a = await start_node(nursery, "alice")
    b = await start_node(nursery, "bob", peers=[a.target()], redial_initial=30.0, redial_max=30.0)
    await wait_connected((a, b), (b, a))
    await a.stop()
    [line] = await logs.wait_for(
        rf"^disconnected from {short_id(a.peer_id)} \(alice\): peer left \(node shutting down\)$",
        logger=NODE_LOG,
        level=logging.INFO,
    )
    one_line([line])
    assert a.peer_id not in b.node.connections
    # A logged its own side too, saying it was A that shut down (not bob), and it no longer
    # has any connection.
    assert logs.matching(
        rf"^disconnected from {short_id(b.peer_id)} \(bob\): this node is shutting down$",
        logger=NODE_LOG,
    )
    assert a.node.connections == {}


async def test_a_taken_port_is_a_clear_config_error(nursery: trio.Nursery) -> None:
    a = await start_node(nursery, "alice")
    taken = Config(listen_host="127.0.0.1", listen_port=a.port, name="second")
    with pytest.raises(ConfigError, match=r"^cannot listen on 127.0.0.1:\d+: .*HOST:0"):
        await Node(IdentityKey.generate(), taken).run()
