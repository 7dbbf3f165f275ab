"""PeerConnection timing (keepalive, dead peer, stuck peer) in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from node.config import Config
from node.net.connection import PeerConnection
from tests.net.pairs import connection, streams

CONFIG = Config(keepalive_interval=10.0, idle_timeout=30.0, send_timeout=20.0)






async def test_idle_but_alive_peers_stay_connected(autojump_clock: trio.testing.MockClock) -> None:
    a, b = await streams()
    ca, cb = connection(a, CONFIG), connection(b, CONFIG)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ca.run)
        nursery.start_soon(cb.run)
        await trio.sleep(300)  # virtual time: ten idle timeouts with nothing but keepalives
        assert not ca.close_reason and not cb.close_reason
        nursery.cancel_scope.cancel()
    assert ca.close_reason == "node shutting down"


async def test_silent_peer_is_dropped_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, _b = await streams()  # b completes the handshake, then never sends again
    ca = connection(a, CONFIG)
    start = trio.current_time()
    reason = await ca.run()
    assert reason == "no data from peer for 30 s"
    assert 30.0 <= trio.current_time() - start <= 31.0


async def test_peer_that_stops_reading_is_dropped_after_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, _b = await streams(lockstep=True)  # lockstep: a send blocks until b reads; b never does
    ca = connection(a, CONFIG)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ca.run)
        start = trio.current_time()
        assert await ca.send(b"hello?") is False
        assert 20.0 <= trio.current_time() - start <= 21.0
    assert ca.close_reason == "peer stopped reading (a send took over 20 s)"


async def test_messages_reach_the_handler_and_goodbye_has_a_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams()
    got: list[bytes] = []
    ca, cb = connection(a, CONFIG), connection(b, CONFIG, got)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cb.run)
        nursery.start_soon(ca.run)
        assert await ca.send(b"one") and await ca.send(b"two")
        ca.close("user quit")
    assert got == [b"one", b"two"]
    assert cb.close_reason == "peer left (user quit)"


async def test_what_is_queued_goes_out_in_one_write_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams()
    writes: list[int] = []
    real = a.transport.send_all

    async def counted(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        await real(data)

    a.transport.send_all = counted  # type: ignore[method-assign]
    received: list[bytes] = []
    burst = [f"message {i}".encode() * (i + 1) for i in range(50)]
    done = trio.Event()

    async def on_message(conn: PeerConnection, data: bytes) -> None:
        received.append(data)
        if len(received) == len(burst):
            done.set()

    ca, cb = connection(a, CONFIG), connection(b, CONFIG)
    cb._on_message = on_message
    async with trio.open_nursery() as nursery:
        for data in burst:  # queued before the sender task first runs
            assert ca.send_nowait(data)
        nursery.start_soon(ca.run)
        nursery.start_soon(cb.run)
        with trio.fail_after(5):
            await done.wait()
        assert received == burst  # each its own message, in order
        assert len(writes) == 1  # one syscall for the whole burst
        nursery.cancel_scope.cancel()
