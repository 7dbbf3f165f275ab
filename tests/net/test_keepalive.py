"""Keepalive rules (docs/protocol.md section 6) in virtual time: a quiet channel costs one
probe and one answer per ``keepalive_interval``, a dead peer is still dropped, and a peer of
the previous version (PING after 8 s without sending, gone after 25 s of silence) is kept."""

from __future__ import annotations

import itertools
import socket

import trio
import trio.testing

from node.channel.core import Channel, Role
from node.config import Config
from node.net.connection import (
    LEGACY_IDLE,
    PROBE_MARGIN,
    REPLY_AFTER,
    PeerConnection,
    PeerInfo,
)
from node.net.secure_stream import SecureStream
from tests.net.pairs import KEY_A, KEY_B, connection, streams

CONFIG = Config()  # the defaults are what is under test
QUIET = 1200.0  # virtual seconds of quiet: twenty keepalive intervals
#: What the previous version did (node/config.py before the change).
OLD_INTERVAL, OLD_TIMEOUT = 8.0, 25.0
#: Two current nodes: each Hello states the idle timeout.
NEW = (CONFIG.idle_timeout, CONFIG.idle_timeout)
#: The version between (dialler probes after 60 s of quiet, gives up after 100 s; its
#: Hello states no idle timeout).
SIXTY = Config(keepalive_interval=60.0, idle_timeout=100.0)






def _count_pings(stream: SecureStream) -> list[float]:
    """The times at which ``stream`` sends a PING (the list fills as it runs)."""
    sent: list[float] = []
    real = stream.send_ping

    async def counted() -> None:
        sent.append(trio.current_time())
        await real()

    stream.send_ping = counted  # type: ignore[method-assign]
    return sent


def _heard(stream: SecureStream) -> list[float]:
    """The times at which ``stream`` reads a complete record (any type)."""
    times: list[float] = []
    real = stream.channel.next_event

    def next_event() -> object:
        before = stream.channel.records_received
        event = real()
        if stream.channel.records_received != before:
            times.append(trio.current_time())
        return event

    stream.channel.next_event = next_event  # type: ignore[method-assign,assignment]
    return times


def _longest_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


async def _old_node(stream: SecureStream, received: list[bytes] | None = None) -> None:
    """A node of the previous version on ``stream``: it reads everything, PINGs after
    8 s without sending and gives up (returns) after 25 s without hearing anything."""
    last_sent = trio.current_time()

    async def read() -> None:
        while True:
            data = await stream.receive_message()
            if received is not None:
                received.append(data)

    async def keepalive() -> None:
        nonlocal last_sent
        while True:
            await trio.sleep_until(last_sent + OLD_INTERVAL)
            if trio.current_time() >= last_sent + OLD_INTERVAL:
                await stream.send_ping()
                last_sent = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(keepalive)
        while True:  # its watchdog: wakes at each deadline, as the old node's did
            deadline = stream.last_received + OLD_TIMEOUT
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        nursery.cancel_scope.cancel()


async def test_a_quiet_channel_costs_one_probe_and_one_answer_per_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams(idle=NEW)
    a_pings, b_pings = _count_pings(a), _count_pings(b)
    ca, cb = connection(a, CONFIG), connection(b, CONFIG)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ca.run)
        nursery.start_soon(cb.run)
        start = trio.current_time()
        await trio.sleep(QUIET + 1)  # the last probe's answer has come in
        assert not ca.close_reason and not cb.close_reason
        nursery.cancel_scope.cancel()
    intervals = int(QUIET / CONFIG.keepalive_interval)
    # The dialler probes once per interval of quiet; the acceptor only answers.
    assert intervals - 1 <= len(a_pings) <= intervals
    assert len(b_pings) == len(a_pings)
    assert all(p - start >= CONFIG.keepalive_interval * (i + 1) for i, p in enumerate(a_pings))
    assert all(answer - probe < 1.0 for probe, answer in zip(a_pings, b_pings, strict=True))


async def test_a_busy_dialler_hears_from_a_silent_acceptor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams(idle=NEW)
    heard_by_a = _heard(a)
    got: list[bytes] = []
    ca, cb = connection(a, CONFIG), connection(b, CONFIG, got)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ca.run)
        nursery.start_soon(cb.run)
        start = trio.current_time()
        for i in range(int(QUIET / 5)):  # data every 5 s: the dialler never probes
            assert await ca.send(b"tick %d" % i)
            await trio.sleep(5)
        assert not ca.close_reason and not cb.close_reason
        nursery.cancel_scope.cancel()
    assert len(got) == int(QUIET / 5)
    # b answers data within REPLY_AFTER (+ the 5 s until the next message starts the clock).
    assert _longest_gap(heard_by_a, start, start + QUIET) <= REPLY_AFTER + 5 + 1


async def test_a_dead_peer_is_still_dropped_by_the_dialler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams(idle=NEW)  # b completes the handshake, then never reads or sends again
    a_pings = _count_pings(a)
    start = trio.current_time()
    reason = await connection(a, CONFIG).run()
    assert reason == f"no data from peer for {CONFIG.idle_timeout:g} s"
    assert CONFIG.idle_timeout <= trio.current_time() - start <= CONFIG.idle_timeout + 1
    assert len(a_pings) == 1  # it probed once, at the interval, and got no answer
    assert b.channel.records_received == 0


async def test_a_dead_peer_is_still_dropped_by_the_acceptor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _a, b = await streams(idle=NEW)
    b_pings = _count_pings(b)
    start = trio.current_time()
    reason = await connection(b, CONFIG).run()
    assert reason == f"no data from peer for {CONFIG.idle_timeout:g} s"
    assert CONFIG.idle_timeout <= trio.current_time() - start <= CONFIG.idle_timeout + 1
    assert b_pings == []  # the acceptor never probes


async def test_idle_timeout_leaves_room_for_the_probe_and_the_reply() -> None:
    # The acceptor hears the dialler at least every keepalive_interval + REPLY_AFTER.
    assert CONFIG.idle_timeout > CONFIG.keepalive_interval + REPLY_AFTER + 20
    # ...and the dialler probes at the interval when the acceptor states that timeout.
    assert CONFIG.idle_timeout - PROBE_MARGIN >= CONFIG.keepalive_interval


async def _probes(dialler: PeerConnection, acceptor: PeerConnection, a: SecureStream,
                  ) -> tuple[list[float], float]:
    """Run both ends over ``QUIET`` seconds of quiet: the dialler's PING times (``a`` is
    its stream) and when the quiet began; neither end may close meanwhile."""
    pings = _count_pings(a)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dialler.run)
        nursery.start_soon(acceptor.run)
        start = trio.current_time()
        await trio.sleep(QUIET + 1)
        assert not dialler.close_reason and not acceptor.close_reason
        nursery.cancel_scope.cancel()
    return pings, start


async def test_a_new_dialler_probes_a_sixty_second_acceptor_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The acceptor's Hello states no idle timeout: it may be the version that gives up
    # after 100 s, so the dialler probes after 60 s of quiet, not keepalive_interval.
    a, b = await streams(idle=(CONFIG.idle_timeout, None))
    pings, start = await _probes(connection(a, CONFIG), connection(b, SIXTY), a)
    assert CONFIG.keepalive_interval > LEGACY_IDLE - PROBE_MARGIN == 60
    assert len(pings) == int(QUIET / 60)
    assert _longest_gap(pings, start, start + QUIET) <= 60 + 1


async def test_a_sixty_second_dialler_keeps_a_new_acceptor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams(idle=(None, CONFIG.idle_timeout))
    pings, _ = await _probes(connection(a, SIXTY), connection(b, CONFIG), a)
    assert len(pings) == int(QUIET / 60)


async def test_a_peer_stating_a_tiny_idle_timeout_gets_no_flood_of_probes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams(idle=(CONFIG.idle_timeout, 0.001))
    pings, _ = await _probes(connection(a, CONFIG), connection(b, CONFIG), a)
    window = REPLY_AFTER / 2  # the answer window: how often a peer can make us PING it
    assert int(QUIET / window) - 1 <= len(pings) <= int(QUIET / window) + 1


async def _with_old_peer(new: SecureStream, old: SecureStream) -> tuple[str, float, bool]:
    """Run ``new`` as a current node against ``old`` as a previous-version node over
    ``QUIET`` seconds: (new side's close reason, the longest the old side went without
    hearing the new one, whether the old side is still up)."""
    heard_by_old = _heard(old)
    conn = connection(new, CONFIG)
    old_done = False

    async def run_old() -> None:
        nonlocal old_done
        await _old_node(old)
        old_done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        nursery.start_soon(run_old)
        start = trio.current_time()
        await trio.sleep(QUIET)
        nursery.cancel_scope.cancel()
    return conn.close_reason, _longest_gap(heard_by_old, start, start + QUIET), not old_done


async def test_a_new_dialler_keeps_an_old_acceptor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams()
    reason, gap, old_up = await _with_old_peer(a, b)
    assert old_up and reason == "node shutting down"
    assert gap <= OLD_INTERVAL + 1  # every PING of the old node is answered


async def test_a_new_acceptor_keeps_an_old_dialler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams()
    reason, gap, old_up = await _with_old_peer(b, a)
    assert old_up and reason == "node shutting down"
    assert gap <= OLD_INTERVAL + 1


async def test_an_old_peer_streaming_to_a_silent_new_node_keeps_hearing_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The old node sends data every 5 s, so it never PINGs and nothing asks us to
    # answer but the data itself: we must speak within its 25 s anyway.
    a, b = await streams()
    heard_by_old = _heard(a)
    got: list[bytes] = []
    conn = connection(b, CONFIG, got)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        start = trio.current_time()
        for i in range(int(QUIET / 5)):
            await a.send_message(b"old %d" % i)
            with trio.move_on_after(5):
                await a.receive_message()  # reads our PINGs (returns on data only)
            assert trio.current_time() - a.last_received < OLD_TIMEOUT
        nursery.cancel_scope.cancel()
    assert len(got) == int(QUIET / 5)
    assert _longest_gap(heard_by_old, start, start + QUIET) <= REPLY_AFTER + 5 + 1


async def _ignore(conn: PeerConnection, data: bytes) -> None:
    await trio.lowlevel.checkpoint()


async def test_a_tcp_channel_leaves_dead_links_to_the_kernel() -> None:
    # Real TCP on loopback: the options that make the kernel fail the socket once the
    # peer's machine has not answered for dead_link_timeout (a pulled cable, a dead host).
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener, await trio.open_tcp_stream("127.0.0.1", port) as tcp:
        stream = SecureStream(tcp, Channel(Role.INITIATOR, KEY_A, name="alice"))
        info = PeerInfo(KEY_B.peer_id, "bob", "tcp", "outbound", KEY_A.peer_id, 0.0)
        PeerConnection(stream, info, CONFIG, _ignore)
        dead = CONFIG.dead_link_timeout
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        idle = tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + count * interval <= dead
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1000 * dead
        # dead-link detection stays within the 30 s the mesh promises
        assert dead <= 30
