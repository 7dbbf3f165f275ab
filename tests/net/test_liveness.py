"""Only complete, authenticated records keep a channel alive (virtual time)."""

from __future__ import annotations

import trio
import trio.testing

from node.net.secure_stream import SecureStream
from tests.net.pairs import connection, streams
from tests.net.test_connection import CONFIG

DRIP_INTERVAL = 2.0


async def drip(peer: SecureStream, record: bytes) -> None:
    """Send ``record`` one byte every ``DRIP_INTERVAL`` s, never its last byte."""
    for byte in record[:-1]:
        await trio.sleep(DRIP_INTERVAL)
        await peer.transport.send_all(bytes([byte]))
    await trio.sleep_forever()


async def test_a_peer_dripping_an_unfinished_record_is_dropped_at_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams()
    ca = connection(a, CONFIG)
    record = b.channel.send_message(bytes(1000))  # ~1,000 bytes: a drip of half an hour
    assert len(record) * DRIP_INTERVAL > 10 * CONFIG.idle_timeout
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drip, b, record)
        start = trio.current_time()
        reason = await ca.run()
        nursery.cancel_scope.cancel()
    assert reason == f"no data from peer for {CONFIG.idle_timeout:g} s"
    assert CONFIG.idle_timeout <= trio.current_time() - start <= CONFIG.idle_timeout + 1
    assert a.channel.records_received == 0


async def test_complete_records_do_keep_it_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = await streams()
    ca = connection(a, CONFIG)

    async def ping_now_and_then() -> None:
        while True:
            await trio.sleep(CONFIG.idle_timeout - 1)
            await b.send_ping()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping_now_and_then)
        nursery.start_soon(ca.run)
        await trio.sleep(10 * CONFIG.idle_timeout)
        assert ca.close_reason == ""
        assert a.channel.records_received >= 9
        nursery.cancel_scope.cancel()
