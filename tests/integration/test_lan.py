"""LAN discovery faults, in-process: a fake mDNS source feeds real nodes over loopback TCP.

Real multicast is exercised in tests/system (network namespaces); here the
announcements are chosen by the test so that floods, dead ports, non-Kith
services and self-announcements can be produced on demand.
"""

from __future__ import annotations

import functools
import logging
import math

import trio

from node.channel.core import Channel, Role
from node.crypto.keys import IdentityKey
from node.mesh.state import Presence
from node.net.discovery import DiscoveryEvent, Found, Lost
from node.net.secure_stream import SecureStream
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


async def test_two_announced_nodes_connect_once(logs: LogWatch) -> None:
    mdns_a, mdns_b = FakeMdns(), FakeMdns()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, "alice", discovery=mdns_a, dial_grace=0.3)
        b = await start_node(nursery, "bob", discovery=mdns_b, dial_grace=0.3)
        mdns_a.announce_node(b)
        mdns_b.announce_node(a)
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: b.peer_id in a.node.connections)
            await b.node.wait_until(lambda: a.peer_id in b.node.connections)
        # Past the grace period the second node must not dial a duplicate.
        with trio.move_on_after(0.6):
            await logs.wait_for(r"mDNS: found")
            await trio.sleep_forever()
        assert not logs.matching(r"duplicate")
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


async def test_withdrawn_announcement_stops_redialling_but_keeps_the_channel(
    logs: LogWatch,
) -> None:
    mdns = FakeMdns()
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, "bob")
        a = await start_node(nursery, "alice", discovery=mdns, dial_grace=0)
        mdns.announce("kith-bob0000000000000", b.port)
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: b.peer_id in a.node.connections)
        mdns.withdraw("kith-bob0000000000000")
        await logs.wait_for(r"kith-bob0000000000000 withdrew")
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
