"""Channel cap and fair handshake slots over real loopback TCP (in one process).

Attackers are raw sockets and hand-driven ``Channel`` cores with throwaway keys,
as a flooding host would use: a completed channel costs nothing but a new key.
Distinct sources are distinct loopback addresses (127.0.0.2, ...).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from node.channel.core import REC_CLOSE, HandshakeCompleted
from node.crypto.keys import IdentityKey
from node.ids import short_id
from node.net.secure_stream import SecureStream
from node.node import CHANNELS_FULL
from tests.integration import NODE_LOG, SOON, LogWatch, RunningNode, one_line, start_node
from tests.integration.test_bad_input import (
    RawSockets,
    assert_still_serving,
    closed_by_peer,
    connect_by_hand,
    hand_channel,
    until_message_3,
    victim,
)

#: A new node must get in within this many seconds while another address floods.
FAIR_WITHIN = 10.0
FLOODER = "127.0.0.2"


@pytest.fixture
async def raw() -> AsyncIterator[RawSockets]:
    sockets = RawSockets()
    yield sockets
    for stream in sockets.opened:
        await trio.aclose_forcefully(stream)


async def completed_channel(a: RunningNode, raw: RawSockets, source: str | None = None
                            ) -> tuple[SecureStream, IdentityKey]:
    """A channel to A with a throwaway key, handshake complete on our side."""
    identity = IdentityKey.generate()
    tcp, _ = await raw.connect(a, source)
    stream = SecureStream(tcp, hand_channel(identity=identity))
    with trio.fail_after(SOON):
        await stream.do_handshake()
    return stream, identity


def admitted(a: RunningNode, identity: IdentityKey) -> Callable[[], bool]:
    return lambda: identity.peer_id in a.node.connections


async def test_channels_beyond_the_cap_are_refused_with_one_line(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery, max_channels=3)  # B holds one of the three
    assert v.a.node.limits.channels == 3
    inside = []
    for _ in range(2):
        stream, identity = await completed_channel(v.a, raw)
        with trio.fail_after(SOON):
            await v.a.node.wait_until(admitted(v.a, identity))
        inside.append(stream)
    # Full: further connections are closed at once, before any handshake.
    for _ in range(5):
        tcp, _ = await raw.connect(v.a)
        with trio.fail_after(SOON):
            await closed_by_peer(tcp)
    [line] = await logs.wait_for(
        r"^refusing new connections: 3 channels open \(the limit, see --max-channels\)",
        logger=NODE_LOG, level=logging.WARNING,
    )
    one_line([line])
    assert len(v.a.node.connections) == 3
    assert v.a.node.admission.handshaking == 0
    # One leaves: there is room again.
    await inside.pop().aclose()
    with trio.fail_after(SOON):
        await v.a.node.wait_until(lambda: len(v.a.node.connections) == 2)
    _, identity = await completed_channel(v.a, raw)
    with trio.fail_after(SOON):
        await v.a.node.wait_until(admitted(v.a, identity))
    assert len(logs.matching(r"^refusing new connections: ", logger=NODE_LOG)) == 1


async def test_handshakes_that_finish_when_the_cap_is_reached_are_told_why(
    nursery: trio.Nursery, raw: RawSockets
) -> None:
    v = await victim(nursery, max_channels=2, handshake_timeout=30.0)  # B holds one
    # Two handshakes start while there is room for one more channel ...
    first, second = hand_channel(), hand_channel()
    tcp1, _ = await raw.connect(v.a)
    tcp2, _ = await raw.connect(v.a, "127.0.0.2")
    message_3s = [await until_message_3(tcp1, first), await until_message_3(tcp2, second)]
    # ... and both finish: the first gets the last channel, the second a goodbye.
    await tcp1.send_all(message_3s[0])
    assert first.remote is not None
    with trio.fail_after(SOON):
        await v.a.node.wait_until(lambda: len(v.a.node.connections) == 2)
    await tcp2.send_all(message_3s[1])
    stream = SecureStream(tcp2, second)
    stream.handshake = HandshakeCompleted(v.a.peer_id, "alice", 1)  # done by hand above
    with trio.fail_after(SOON):
        try:
            while True:
                await stream.receive_message()
        except trio.EndOfChannel:
            pass
    assert stream.close_reason == CHANNELS_FULL
    assert len(v.a.node.connections) == 2
    await assert_still_serving_but_full(v.a)


async def assert_still_serving_but_full(a: RunningNode) -> None:
    assert a.node.admission.handshaking == 0
    assert len(a.node.connections) == a.node.limits.channels


async def flood(a: RunningNode, raw: RawSockets, source: str, width: int,
                stats: dict[str, int]) -> None:
    """Keep ``width`` connections from ``source`` open at all times, reopening each as
    soon as A closes it, never sending a byte (each holds a handshake slot if A lets it)."""

    async def one() -> None:
        while True:
            tcp, _ = await raw.connect(a, source)
            stats["opened"] += 1
            await closed_by_peer(tcp)
            await tcp.aclose()
            raw.opened.remove(tcp)

    async with trio.open_nursery() as nursery:
        for _ in range(width):
            nursery.start_soon(one)


async def test_a_new_node_gets_in_while_one_address_floods(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    a = await start_node(nursery, "alice", max_handshaking=8, handshake_timeout=FAIR_WITHIN)
    assert a.node.limits.per_address == 2
    stats = {"opened": 0}
    async with trio.open_nursery() as flooding:
        flooding.start_soon(flood, a, raw, FLOODER, 16, stats)
        with trio.fail_after(SOON):
            await a.node.wait_until(lambda: a.node.admission.held_by(FLOODER) == 2)
        await logs.wait_for(rf"^refusing connections from {FLOODER}: 2 handshakes from "
                            r"that address already in progress \(its share of 8\)",
                            logger=NODE_LOG, level=logging.WARNING)
        started = trio.current_time()
        c = await start_node(nursery, "carol", peers=[a.target()])
        with trio.fail_after(FAIR_WITHIN):
            await a.node.wait_until(lambda: c.peer_id in a.node.connections)
        assert trio.current_time() - started < FAIR_WITHIN
        # The flood went on the whole time, holding its share and no more.
        assert a.node.admission.held_by(FLOODER) <= 2
        assert stats["opened"] > 16
        flooding.cancel_scope.cancel()
    lines = logs.matching(rf"^refusing connections from {FLOODER}: ", logger=NODE_LOG)
    assert len(lines) == 1, lines  # many refusals, one line (within the interval)


async def test_a_huge_close_reason_is_one_short_line(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery)
    tcp, stream, mallory = await connect_by_hand(v, raw)
    reason = ("bye\n" + "x" * 64_000).encode()
    await tcp.send_all(stream.channel._record(REC_CLOSE, reason))
    with trio.fail_after(SOON):
        await closed_by_peer(tcp)
    [line] = await logs.wait_for(
        rf"^disconnected from {short_id(mallory.peer_id)} \(mallory\): peer left \(bye\\x0a",
        logger=NODE_LOG,
    )
    one_line([line])
    assert len(line) < 400, len(line)
    await assert_still_serving(v, nursery)


async def test_a_flood_of_bad_handshakes_from_one_address_is_one_line(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery, handshake_timeout=30.0)
    for _ in range(50):
        tcp, _ = await raw.connect(v.a, FLOODER)
        await tcp.send_all(b"\x00\x00junk")  # a zero-length frame: rejected at once
        with trio.fail_after(SOON):
            await closed_by_peer(tcp)
    with trio.fail_after(SOON):
        await v.a.node.wait_until(lambda: v.a.node.admission.handshaking == 0)
    lines = logs.matching(rf"^rejected connection from {FLOODER}:", logger=NODE_LOG)
    assert len(lines) == 1, lines
    # Another address is another source: its line is not held back.
    tcp, where = await raw.connect(v.a)
    await tcp.send_all(b"\x00\x00junk")
    one_line(await logs.wait_for(rf"^rejected connection from {where}: ", logger=NODE_LOG))
    await assert_still_serving(v, nursery)
