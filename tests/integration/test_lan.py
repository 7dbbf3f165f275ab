"""LAN discovery faults, in-process: a fake mDNS source feeds real nodes over loopback TCP.

Real multicast is exercised in tests/system (network namespaces); here the
announcements are chosen by the test so that floods, dead ports, non-Kith
services and self-announcements can be produced on demand.
"""

from __future__ import annotations

import functools
import logging
import math

import pytest
import trio
import trio.testing

from node.channel.core import Channel, Role
from node.crypto.keys import IdentityKey
from node.mesh.state import Presence
from node.net.connection import PeerConnection
from node.net.discovery import DiscoveryEvent, Found, Lost
from node.net.secure_stream import SecureStream
from node.node import Node
from node.wire.announce import Announcement
from tests.integration import SOON, LogWatch, RunningNode, exchange, one_line, start_node


class FakeMdns:
    """A discovery source whose events the test sends with ``announce`` / ``withdraw``."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[DiscoveryEvent](math.inf)

    async def run(
        self,
        events: trio.MemorySendChannel[DiscoveryEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for event in self._receive:
            await events.send(event)

    def announce(self, instance: str, port: int, host: str = "127.0.0.1") -> None:
        self._send.send_nowait(Found(Announcement(instance, (host,), port, 1, None)))

    def announce_node(self, node: RunningNode) -> None:
        assert node.node.instance is not None
        self.announce(node.node.instance, node.port)

    def withdraw(self, instance: str) -> None:
        self._send.send_nowait(Lost(instance))


async def _closed_port() -> int:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port: int = listener.socket.getsockname()[1]
    await listener.aclose()
    return port


def record_admissions(node: Node, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every channel ``node`` sets up from now on, as (direction, admitted): False is a
    channel that lost the one-channel-per-peer rule (a duplicate)."""
    seen: list[tuple[str, bool]] = []
    admit = node._admit

    def recording(conn: PeerConnection, found: str, instance: str | None) -> bool:
        admitted = admit(conn, found, instance)
        seen.append((conn.info.direction, admitted))
        return admitted

    monkeypatch.setattr(node, "_admit", recording)
    return seen


def declined_to_dial(node: Node, monkeypatch: pytest.MonkeyPatch) -> trio.Event:
    """Set once a dial loop of ``node`` asks whether to dial and is told no (it waits)."""
    declined = trio.Event()
    should_dial = node.mesh.should_dial

    def asking(instance: str) -> bool:
        answer = should_dial(instance)
        if not answer:
            declined.set()
        return answer

    monkeypatch.setattr(node.mesh, "should_dial", asking)
    return declined


def dial_loops(instance: str) -> int:
    """How many ``LanDiscovery`` dial loops for ``instance`` are running (in this run)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, tasks = 0, [root]
    while tasks:
        task = tasks.pop()
        frame = getattr(task.coro, "cr_frame", None)
        if (getattr(task.coro, "__qualname__", "") == "LanDiscovery._dial_loop"
                and frame is not None and frame.f_locals.get("instance") == instance):
            count += 1
        tasks += [t for n in task.child_nurseries for t in n.child_tasks]
    return count


async def test_two_announced_nodes_connect_once(monkeypatch: pytest.MonkeyPatch) -> None:
    mdns_a, mdns_b = FakeMdns(), FakeMdns()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, "alice", discovery=mdns_a, dial_grace=1.0)
        b = await start_node(nursery, "bob", discovery=mdns_b, dial_grace=1.0)
        admitted_a = record_admissions(a.node, monkeypatch)
        admitted_b = record_admissions(b.node, monkeypatch)
        settled = [declined_to_dial(a.node, monkeypatch), declined_to_dial(b.node, monkeypatch)]
        mdns_a.announce_node(b)
        mdns_b.announce_node(a)
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: b.peer_id in a.node.connections)
            await b.node.wait_until(lambda: a.peer_id in b.node.connections)
            channel = a.node.connections[b.peer_id], b.node.connections[a.peer_id]
            # One node dials at once; the other waits out its grace period, then sees
            # the channel up and does not dial. Wait until both dial loops said no.
            for declined in settled:
                await declined.wait()
        # exactly one channel was ever set up, dialled by one and accepted by the other
        assert sorted(admitted_a + admitted_b) == [("inbound", True), ("outbound", True)]
        assert len(admitted_a) == len(admitted_b) == 1
        assert (a.node.connections[b.peer_id], b.node.connections[a.peer_id]) == channel
        assert channel[0].info.initiator == channel[1].info.initiator
        assert a.node.mesh.presence(b.peer_id) is Presence.ONLINE
        assert "mdns" in a.node.mesh.known[b.peer_id].found
        await exchange(a, b)
        nursery.cancel_scope.cancel()


async def test_flood_of_announcements_is_capped_and_the_node_keeps_serving(
    logs: LogWatch,
) -> None:
    mdns = FakeMdns()
    dead = await _closed_port()
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, "bob")
        a = await start_node(nursery, "alice", discovery=mdns, max_candidates=16,
                             peers=[b.target()])
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: b.peer_id in a.node.connections)
        for i in range(1000):
            mdns.announce(f"kith-flood{i:05d}", dead)
        [warning] = await logs.wait_for(r"mDNS: ignored \d+ announcement", level=logging.WARNING)
        one_line([warning])
        assert len(a.node.mesh.candidates) <= 16
        await exchange(a, b)
        nursery.cancel_scope.cancel()


async def test_dead_port_gets_one_line_backoff_and_is_forgotten(logs: LogWatch) -> None:
    mdns = FakeMdns()
    dead = await _closed_port()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, "alice", discovery=mdns, forget_after=4, dial_grace=0)
        mdns.announce("kith-deadbeef00000000", dead)
        await logs.wait_for(r"mDNS: forgetting kith-deadbeef00000000 .* no answer after 4 tries")
        warnings = logs.matching(r"kith-deadbeef", level=logging.WARNING)
        assert len(warnings) == 1 and "retrying quietly" in warnings[0]
        one_line(warnings)
        assert "kith-deadbeef00000000" not in a.node.mesh.candidates
        assert a.node.mesh.views() == []
        nursery.cancel_scope.cancel()


async def test_non_kith_service_is_not_a_peer(logs: LogWatch) -> None:
    async def http_server(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(1024)
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    mdns = FakeMdns()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, http_server, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        a = await start_node(nursery, "alice", discovery=mdns, forget_after=3, dial_grace=0)
        mdns.announce("kith-notkith000000000", port)
        [warning] = await logs.wait_for(r"cannot connect to kith-notkith", level=logging.WARNING)
        assert "handshake failed" in warning or "protocol error" in warning
        await logs.wait_for(r"forgetting kith-notkith")
        assert not a.node.connections
        nursery.cancel_scope.cancel()


async def test_announcement_pointing_at_the_node_itself(logs: LogWatch) -> None:
    mdns = FakeMdns()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, "alice", discovery=mdns, dial_grace=0)
        mdns.announce("kith-stale0000000000", a.port)  # our own address, an old instance
        await logs.wait_for(r"mDNS: kith-stale0000000000 is this node itself")
        assert a.node.mesh.candidates["kith-stale0000000000"].is_self
        assert not a.node.mesh.should_dial("kith-stale0000000000")
        assert a.node.mesh.views() == []
        # Its own current instance is never even tracked.
        assert a.node.instance is not None
        mdns.announce(a.node.instance, a.port)
        mdns.withdraw("kith-stale0000000000")
        await logs.wait_for(r"kith-stale0000000000 withdrew")
        assert a.node.mesh.candidates == {}
        nursery.cancel_scope.cancel()


async def test_withdrawn_announcement_stops_redialling_but_keeps_the_channel() -> None:
    mdns = FakeMdns()
    bob = "kith-bob0000000000000"
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, "bob")
        a = await start_node(nursery, "alice", discovery=mdns, dial_grace=0)
        mdns.announce(bob, b.port)
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: b.peer_id in a.node.connections)
        channel = a.node.connections[b.peer_id]
        assert a.node.mesh.candidates[bob].peer == b.peer_id
        assert dial_loops(bob) == 1  # it would redial bob if the channel dropped

        mdns.withdraw(bob)
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: bob not in a.node.mesh.candidates)
        await trio.testing.wait_all_tasks_blocked()  # the cancelled dial loop has ended
        assert dial_loops(bob) == 0
        assert a.node.connections.get(b.peer_id) is channel  # the channel stays
        assert a.node.mesh.presence(b.peer_id) is Presence.ONLINE
        assert a.node.mesh.should_dial(bob) is False
        await exchange(a, b)
        nursery.cancel_scope.cancel()


async def test_peer_that_stops_reading_is_dropped_and_others_keep_receiving(
    logs: LogWatch,
) -> None:
    """Broadcast to a good peer and a stuck one: the good one gets everything."""
    count, size = 400, 64 * 1024
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, "alice", send_timeout=0.5, send_queue=64)
        b = await start_node(nursery, "bob", peers=[a.target()])
        # The stuck peer: completes the handshake, then never reads again.
        tcp = await trio.open_tcp_stream("127.0.0.1", a.port)
        stuck = SecureStream(tcp, Channel(Role.INITIATOR, IdentityKey.generate(), name="stuck"))
        await stuck.do_handshake()
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: len(a.node.connections) == 2)

        # Each message goes to both peers; bob must get every one promptly while
        # the stuck peer's socket buffer fills and it is dropped. 400 x 64 KiB is
        # far more than loopback buffers hold, so the stuck peer does block.
        dropped_at = None
        for i in range(count):
            message = i.to_bytes(4, "big") + bytes(size - 4)
            assert a.node.broadcast(message) >= 1
            assert await b.inbox.get() == (a.peer_id, message)  # within SOON, in order
            if dropped_at is None and len(a.node.connections) == 1:
                dropped_at = i
        assert dropped_at is not None, "the stuck peer was never dropped"
        assert dropped_at < count - 1  # bob kept receiving after the drop too
        [drop] = logs.matching(r"disconnected from .* \(stuck\): peer (stopped reading|too slow)")
        one_line([drop])
        assert b.peer_id in a.node.connections
        await trio.aclose_forcefully(stuck)
        nursery.cancel_scope.cancel()
