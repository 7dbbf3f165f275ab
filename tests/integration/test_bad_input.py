"""A node under bad input: it logs one clear line, drops only the offender, keeps serving.

Each test starts a victim A with a good peer B already connected (B dialled A
once, with no redialling, so a dropped B would stay dropped). After the bad
input, A must still hold the very same channel to B, exchange a message over
it, and accept a brand-new good peer C. Attackers are raw TCP sockets on
127.0.0.1, or a ``Channel`` (the sans-I/O core) driven by hand when the attack
needs a completed or nearly completed Noise handshake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from node.channel.core import (
    REC_CLOSE,
    REC_DATA,
    REC_MORE,
    REC_PING,
    Channel,
    HandshakeCompleted,
    Role,
    SelfConnectionError,
    UnexpectedPeerError,
)
from node.crypto.keys import IdentityKey
from node.errors import HandshakeError
from node.ids import format_peer_id, short_id
from node.net.address import DialTarget
from node.net.connection import PeerConnection
from node.net.secure_stream import SecureStream
from node.version import PROTOCOL_VERSION
from node.wire.framing import encode_frame
from node.wire.hello import Hello
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

MiB = 1024 * 1024


# -- the victim and its good peers ----------------------------------------------


@dataclass
class Victim:
    a: RunningNode
    b: RunningNode
    b_channel: PeerConnection  # A's channel to B, established before the attack
    network_key: bytes | None


async def victim(nursery: trio.Nursery, **a_config: Any) -> Victim:
    """A (configured with ``a_config``) with B connected to it."""
    key = a_config.get("network_key")
    assert key is None or isinstance(key, bytes)
    a = await start_node(nursery, "alice", **a_config)
    b = await start_node(nursery, "bob", network_key=key)
    await b.node.connect(a.target(a.peer_id))
    await wait_connected((a, b), (b, a))
    return Victim(a, b, a.node.connections[b.peer_id], key)


async def assert_still_serving(v: Victim, nursery: trio.Nursery) -> None:
    """A kept B's channel (and talks over it) and accepts a new good peer."""
    assert v.a.node.connections.get(v.b.peer_id) is v.b_channel
    assert v.b_channel.close_reason == ""
    await exchange(v.a, v.b, b"after the attack")
    c = await start_node(nursery, "carol", network_key=v.network_key)
    with trio.fail_after(SOON):
        await c.node.connect(v.a.target(v.a.peer_id))
    await wait_connected((v.a, c))
    await exchange(v.a, c)


# -- raw attackers ----------------------------------------------------------------


class RawSockets:
    """Raw TCP connections to a node, all closed when the test ends."""

    def __init__(self) -> None:
        self.opened: list[trio.SocketStream] = []

    async def connect(
        self, a: RunningNode, source: str | None = None
    ) -> tuple[trio.SocketStream, str]:
        """A raw TCP connection to A (from ``source``), and the address A will log for it."""
        stream = await trio.open_tcp_stream("127.0.0.1", a.port, local_address=source)
        self.opened.append(stream)
        host, port = stream.socket.getsockname()[:2]
        return stream, f"{host}:{port}"


@pytest.fixture
async def raw() -> AsyncIterator[RawSockets]:
    sockets = RawSockets()
    yield sockets
    for stream in sockets.opened:
        await trio.aclose_forcefully(stream)


async def closed_by_peer(stream: trio.abc.ReceiveStream) -> None:
    """Read (and drop) whatever arrives until the other side closes: FIN or reset."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:  # reset: it closed with our bytes unread
        pass


async def wait_closed_by_peer(stream: trio.abc.ReceiveStream) -> None:
    """``closed_by_peer``, which must happen ``SOON``."""
    with trio.fail_after(SOON):
        await closed_by_peer(stream)


def rejected(where: str, reason: str) -> str:
    return rf"^rejected connection from {re.escape(where)}: {reason}"


def hand_channel(
    role: Role = Role.INITIATOR,
    *,
    identity: IdentityKey | None = None,
    max_message_size: int = MiB,
) -> Channel:
    return Channel(
        role,
        identity or IdentityKey.generate(),
        name="mallory",
        max_message_size=max_message_size,
    )


async def until_message_3(tcp: trio.SocketStream, channel: Channel) -> bytes:
    """Run an initiator ``channel`` by hand up to (not including) sending message 3."""
    await tcp.send_all(channel.start())
    while not isinstance(channel.next_event(), HandshakeCompleted):
        data = await tcp.receive_some(65536)
        assert data, "A closed during the handshake"
        channel.receive_data(data)
    return channel.data_to_send()


# -- 1, 3, 4: not a handshake at all ----------------------------------------------------

GARBAGE = {
    "http request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", r"frame length 18245 exceeds"),
    "zero length prefix": (b"\x00\x00junk", r"frame with length 0"),
    "max length prefix": (b"\xff\xff", r"frame length 65535 exceeds the limit of \d+ bytes"),
    "message 1 with a payload": (
        b"\x00\x28" + b"\x09" + bytes(39),
        r"message 1 must have an empty payload",
    ),
    "forged message 3": (
        encode_frame(b"\x09" + bytes(31)) + encode_frame(bytes(64)),
        r"handshake failed: handshake message failed authentication",
    ),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=list(GARBAGE))
async def test_garbage_instead_of_a_handshake(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets, garbage: tuple[bytes, str]
) -> None:
    data, reason = garbage
    # A long handshake timeout: A must hang up because of what it read, at once.
    v = await victim(nursery, handshake_timeout=30.0)
    tcp, where = await raw.connect(v.a)
    await tcp.send_all(data)
    await wait_closed_by_peer(tcp)
    one_line(await logs.wait_for(rejected(where, f".*{reason}"), level=logging.WARNING))
    await assert_still_serving(v, nursery)


async def test_truncated_message_1(nursery: trio.Nursery, logs: LogWatch, raw: RawSockets) -> None:
    v = await victim(nursery, handshake_timeout=30.0)
    tcp, where = await raw.connect(v.a)
    message_1 = hand_channel().start()
    await tcp.send_all(message_1[:17])
    await tcp.send_eof()
    await wait_closed_by_peer(tcp)
    one_line(
        await logs.wait_for(
            rejected(
                where,
                r"protocol error: connection closed in the middle of a frame "
                r"\(17 bytes left over\)",
            )
        )
    )
    await assert_still_serving(v, nursery)


async def test_truncated_message_3(nursery: trio.Nursery, logs: LogWatch, raw: RawSockets) -> None:
    v = await victim(nursery, handshake_timeout=30.0)
    tcp, where = await raw.connect(v.a)
    message_3 = await until_message_3(tcp, hand_channel())
    await tcp.send_all(message_3[: len(message_3) // 2])
    await tcp.send_eof()
    await wait_closed_by_peer(tcp)
    one_line(await logs.wait_for(rejected(where, r".*in the middle of a frame")))
    assert v.a.node.connections.keys() == {v.b.peer_id}
    await assert_still_serving(v, nursery)


async def test_closing_before_message_3(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery, handshake_timeout=30.0)
    tcp, where = await raw.connect(v.a)
    await until_message_3(tcp, hand_channel())
    await tcp.send_eof()
    await wait_closed_by_peer(tcp)
    one_line(
        await logs.wait_for(
            rejected(where, r"handshake failed: connection closed during the handshake")
        )
    )
    await assert_still_serving(v, nursery)


# -- 5: silence ------------------------------------------------------------------------------


async def test_silent_peer_is_dropped_after_the_handshake_timeout(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery, handshake_timeout=0.5)
    started = trio.current_time()
    tcp, where = await raw.connect(v.a)
    await wait_closed_by_peer(tcp)
    assert trio.current_time() - started >= 0.45
    one_line(await logs.wait_for(rejected(where, r"handshake failed: no handshake within 0.5 s$")))
    await assert_still_serving(v, nursery)


async def test_slow_handshake_is_dropped_after_the_handshake_timeout(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    # Message 1 arrives, then message 3 never does: the timeout covers the whole handshake.
    v = await victim(nursery, handshake_timeout=0.5)
    tcp, where = await raw.connect(v.a)
    await until_message_3(tcp, hand_channel())
    await wait_closed_by_peer(tcp)
    one_line(await logs.wait_for(rejected(where, r"handshake failed: no handshake within 0.5 s$")))
    await assert_still_serving(v, nursery)


# -- 2: network keys -----------------------------------------------------------------------


async def test_wrong_network_key_cannot_connect(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    v = await victim(nursery, network_key=k1)  # B and (later) C hold k1
    a_rejections = r"^rejected connection from 127\.0\.0\.1:\d+: handshake failed: "
    for attempt, key in enumerate((k2, None), start=1):
        m = await start_node(nursery, "mallory", network_key=key, peers=[v.a.target()])
        one_line(
            await logs.wait_for(
                rf"^cannot connect to 127\.0\.0\.1:{v.a.port}: handshake failed: "
                r"handshake message failed authentication",
                logger=NODE_LOG,
                level=logging.WARNING,
                count=attempt,
            )
        )
        # One line per source address and reason per interval: the second is held back.
        one_line(await logs.wait_for(a_rejections, count=1, level=logging.WARNING))
        await m.stop()
        assert m.node.connections == {}
        assert v.a.node.connections.keys() == {v.b.peer_id}
    assert len(logs.matching(a_rejections)) == 1  # (the "plain" node below logs its own)
    # And A, with k1, also refuses to dial a node without it.
    plain = await start_node(nursery, "plain")
    with pytest.raises(HandshakeError, match="failed authentication"), trio.fail_after(SOON):
        await v.a.node.connect(plain.target())
    await assert_still_serving(v, nursery)


# -- 6: corrupted or malformed records after a completed handshake ---------------------------

_LEN = struct.Struct(">I")


def _flip(record: bytes) -> bytes:
    corrupted = bytearray(record)
    corrupted[10] ^= 0x04
    return bytes(corrupted)


def _raw_record(channel: Channel, plaintext: bytes) -> bytes:
    assert channel._send_cs is not None
    return encode_frame(channel._send_cs.encrypt_with_ad(b"", plaintext))


BadRecords = Callable[[Channel], bytes]
#: name: (the bytes Mallory sends, A's reason, what A still delivers before it).
BAD_RECORDS: dict[str, tuple[BadRecords, str] | tuple[BadRecords, str, bytes]] = {
    "flipped bit": (
        lambda ch: _flip(ch.send_message(b"tampered")),
        r"message failed authentication",
    ),
    "replayed record": (
        lambda ch: 2 * ch.send_message(b"replayed"),
        r"message failed authentication",
        b"replayed",  # the first copy is genuine
    ),
    "unknown record type": (lambda ch: ch._record(0x7F, b""), r"unknown record type 127"),
    "empty record": (lambda ch: _raw_record(ch, b""), r"empty transport record"),
    "ping with a body": (lambda ch: ch._record(REC_PING, b"x"), r"PING record with a body"),
    "MORE without DATA": (
        lambda ch: ch._record(REC_MORE, b"x"),
        r"MORE record without a message in progress",
    ),
    "short DATA": (lambda ch: ch._record(REC_DATA, b"\x00"), r"DATA record too short"),
    "longer than announced": (
        lambda ch: ch._record(REC_DATA, _LEN.pack(1) + b"ab"),
        r"message longer than its announced length",
    ),
    "interleaved messages": (
        lambda ch: ch._record(REC_DATA, _LEN.pack(9) + b"a") + ch._record(REC_DATA, _LEN.pack(1)),
        r"new message started before the previous one ended",
    ),
    "stream ends inside a message": (
        lambda ch: ch._record(REC_DATA, _LEN.pack(9) + b"a"),
        r"connection closed in the middle of a message",
    ),
}


async def connect_by_hand(
    v: Victim, raw: RawSockets, *, max_message_size: int = MiB
) -> tuple[trio.SocketStream, SecureStream, IdentityKey]:
    """Mallory: a complete, valid handshake with A from a hand-held channel."""
    identity = IdentityKey.generate()
    tcp, _ = await raw.connect(v.a)
    stream = SecureStream(tcp, hand_channel(identity=identity, max_message_size=max_message_size))
    with trio.fail_after(SOON):
        await stream.do_handshake()
        await v.a.node.wait_until(lambda: identity.peer_id in v.a.node.connections)
    # Prove the channel works before breaking it.
    await stream.send_message(b"hello from mallory")
    assert await v.a.inbox.get() == (identity.peer_id, b"hello from mallory")
    return tcp, stream, identity


@pytest.mark.parametrize("bad", BAD_RECORDS.values(), ids=list(BAD_RECORDS))
async def test_bad_records_drop_only_that_channel(
    nursery: trio.Nursery,
    logs: LogWatch,
    raw: RawSockets,
    bad: tuple[BadRecords, str] | tuple[BadRecords, str, bytes],
) -> None:
    make, reason, *delivered = bad
    v = await victim(nursery)
    tcp, stream, mallory = await connect_by_hand(v, raw)
    await tcp.send_all(make(stream.channel))
    await tcp.send_eof()
    await wait_closed_by_peer(tcp)
    one_line(
        await logs.wait_for(
            rf"^disconnected from {short_id(mallory.peer_id)} \(mallory\): "
            rf"protocol error: {reason}",
            logger=NODE_LOG,
        )
    )
    assert mallory.peer_id not in v.a.node.connections
    for message in delivered:
        assert await v.a.inbox.get() == (mallory.peer_id, message)
    await assert_still_serving(v, nursery)


async def test_goodbye_reason_cannot_forge_log_lines(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery)
    tcp, stream, mallory = await connect_by_hand(v, raw)
    await tcp.send_all(stream.channel._record(REC_CLOSE, b"bye\nINFO forged line\x1b[2J"))
    await wait_closed_by_peer(tcp)
    [line] = await logs.wait_for(
        rf"^disconnected from {short_id(mallory.peer_id)} \(mallory\): peer left \(bye",
        logger=NODE_LOG,
    )
    one_line([line])
    assert line.isprintable(), line
    await assert_still_serving(v, nursery)


# -- 10: oversize message -----------------------------------------------------------------


async def test_oversize_message_drops_the_sender(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery)
    assert v.a.node.config.max_message_size == MiB
    tcp, stream, mallory = await connect_by_hand(v, raw, max_message_size=4 * MiB)
    with trio.fail_after(SOON), contextlib.suppress(trio.BrokenResourceError):
        await stream.send_message(os.urandom(2 * MiB))  # A hangs up before the end
    await wait_closed_by_peer(tcp)
    one_line(
        await logs.wait_for(
            rf"^disconnected from {short_id(mallory.peer_id)} \(mallory\): protocol error: "
            rf"peer announced a message of {2 * MiB} bytes; the cap is {MiB}$",
            logger=NODE_LOG,
        )
    )
    await assert_still_serving(v, nursery)


# -- 7: identities that do not add up ------------------------------------------------------------


async def test_dialling_the_wrong_peer_id_is_refused(nursery: trio.Nursery, logs: LogWatch) -> None:
    v = await victim(nursery)
    m = await start_node(nursery, "mallory")  # listens where A believes C is
    c_id = IdentityKey.generate().peer_id
    posing = DialTarget("127.0.0.1", m.port, c_id)
    with pytest.raises(UnexpectedPeerError), trio.fail_after(SOON):
        await v.a.node.connect(posing)
    v.a.node.dial(posing)
    [line] = await logs.wait_for(
        rf"^cannot connect to {format_peer_id(c_id)}@127\.0\.0\.1:{m.port}: "
        rf"expected peer {format_peer_id(c_id)} but the peer proved it is "
        rf"{format_peer_id(m.peer_id)}; retrying",
        logger=NODE_LOG,
        level=logging.WARNING,
    )
    one_line([line])
    assert m.peer_id not in v.a.node.connections
    assert m.node.connections == {}
    await assert_still_serving(v, nursery)


def forged_hello(channel: Channel, hello: bytes) -> Channel:
    channel._hello = hello
    return channel


def _hello(identity: bytes, *, version: int = PROTOCOL_VERSION, name: str = "mallory") -> bytes:
    return Hello(version, identity, name).encode()


BAD_HELLOS: dict[str, tuple[Callable[[IdentityKey], bytes], str]] = {
    "someone else's identity": (
        lambda me: _hello(IdentityKey.generate().public_key),
        r"peer's identity key does not match its Noise static key",
    ),
    "not an Ed25519 key": (
        lambda me: _hello(b"\xff" * 32),
        r"identity key is not a valid Ed25519 public key",
    ),
    "other protocol version": (
        lambda me: _hello(me.public_key, version=PROTOCOL_VERSION + 1),
        rf"peer speaks protocol version {PROTOCOL_VERSION + 1}, we speak {PROTOCOL_VERSION}",
    ),
    "not msgpack": (lambda me: b"\xc1", r"bad handshake payload: malformed msgpack"),
    "name too long": (
        lambda me: _hello(me.public_key, name="x" * 65),
        r"bad handshake payload: .*'name' must be a string of at most 64 characters",
    ),
}


@pytest.mark.parametrize("bad", BAD_HELLOS.values(), ids=list(BAD_HELLOS))
async def test_bad_hello_from_a_dialler_is_rejected(
    nursery: trio.Nursery,
    logs: LogWatch,
    raw: RawSockets,
    bad: tuple[Callable[[IdentityKey], bytes], str],
) -> None:
    make, reason = bad
    v = await victim(nursery, handshake_timeout=30.0)
    me = IdentityKey.generate()
    tcp, where = await raw.connect(v.a)
    channel = forged_hello(hand_channel(identity=me), make(me))
    # From the initiator's side the handshake completes at message 2 ...
    message_3 = await until_message_3(tcp, channel)
    await tcp.send_all(message_3)
    # ... but A reads the Hello in message 3 and hangs up.
    await wait_closed_by_peer(tcp)
    one_line(await logs.wait_for(rejected(where, f"handshake failed: {reason}")))
    assert me.peer_id not in v.a.node.connections
    await assert_still_serving(v, nursery)


async def serve_forged_hellos(
    hello: Callable[[IdentityKey], bytes], *, task_status: trio.TaskStatus[int]
) -> None:
    """A listener answering every handshake with a forged Hello in message 2."""
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def answer(tcp: trio.SocketStream) -> None:
        me = IdentityKey.generate()
        channel = forged_hello(hand_channel(Role.RESPONDER, identity=me), hello(me))
        stream = SecureStream(tcp, channel)
        async with tcp:
            with contextlib.suppress(HandshakeError, trio.BrokenResourceError):
                await stream.do_handshake()

    async with listener:
        task_status.started(listener.socket.getsockname()[1])
        await trio.serve_listeners(answer, [listener])


async def test_bad_hello_from_a_listener_is_refused(nursery: trio.Nursery, logs: LogWatch) -> None:
    make, reason = BAD_HELLOS["someone else's identity"]
    v = await victim(nursery)
    port = await nursery.start(serve_forged_hellos, make)
    target = DialTarget("127.0.0.1", port)
    with pytest.raises(HandshakeError, match=reason), trio.fail_after(SOON):
        await v.a.node.connect(target)
    v.a.node.dial(target)
    one_line(
        await logs.wait_for(
            rf"^cannot connect to 127\.0\.0\.1:{port}: handshake failed: {reason}",
            logger=NODE_LOG,
            level=logging.WARNING,
        )
    )
    assert v.a.node.connections.keys() == {v.b.peer_id}
    await assert_still_serving(v, nursery)


# -- 8: dialling oneself -------------------------------------------------------------------------


async def test_dialling_itself_gives_up_for_good(nursery: trio.Nursery, logs: LogWatch) -> None:
    v = await victim(nursery)
    a = v.a
    with pytest.raises(SelfConnectionError), trio.fail_after(SOON):
        await a.node.connect(a.target())
    a.node.dial(a.target())
    [line] = await logs.wait_for(
        rf"^not dialling 127\.0\.0\.1:{a.port}: it is this node itself$",
        logger=NODE_LOG,
        level=logging.WARNING,
    )
    one_line([line])
    # The dial task has ended: nothing will redial.
    nursery_of_a = a.node._nursery
    assert nursery_of_a is not None
    assert not [t.name for t in nursery_of_a.child_tasks if t.name.startswith("dial ")]
    assert a.node.connections.keys() == {v.b.peer_id}
    await assert_still_serving(v, nursery)


# -- 9: a flood of half-open connections ---------------------------------------------------------


async def test_half_open_flood_is_refused_beyond_the_limit(
    nursery: trio.Nursery, logs: LogWatch, raw: RawSockets
) -> None:
    v = await victim(nursery, max_handshaking=4, handshake_timeout=30.0)
    # From six addresses, two each: one address may hold two of the four slots.
    sources = [f"127.0.0.{2 + i // 2}" for i in range(12)]
    flood = [await raw.connect(v.a, source) for source in sources]
    refused = 0
    eight_refused = trio.Event()

    async def watch(tcp: trio.SocketStream) -> None:
        nonlocal refused
        await closed_by_peer(tcp)
        refused += 1
        if refused >= 8:
            eight_refused.set()

    async with trio.open_nursery() as watchers:
        for tcp, _ in flood:
            watchers.start_soon(watch, tcp)
        with trio.fail_after(SOON):
            await eight_refused.wait()
        # The four inside the limit are still waiting for their handshake.
        assert refused == 8
        assert v.a.node.admission.handshaking == 4
        [line] = await logs.wait_for(
            r"^refusing new connections: 4 handshakes already in progress \(the limit\)$",
            logger=NODE_LOG,
            level=logging.WARNING,
        )
        one_line([line])
        # Established peers do not notice.
        await exchange(v.a, v.b, b"during the flood")
        watchers.cancel_scope.cancel()
    for tcp, _ in flood:
        await tcp.aclose()
    # A frees the four handshake slots as it sees them close ...
    with trio.fail_after(SOON):
        await v.a.node.wait_until(lambda: v.a.node.admission.handshaking == 0)
    closed = logs.matching(
        r"^rejected connection from .*: handshake failed: connection closed during the handshake"
    )
    # (the first four came from two addresses; one line per address and reason)
    assert {line.split()[3].rstrip(":").rsplit(":", 1)[0] for line in closed} == {
        "127.0.0.2", "127.0.0.3"}
    # ... and a new peer gets in.
    await assert_still_serving(v, nursery)
