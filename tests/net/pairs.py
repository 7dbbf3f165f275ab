"""Two ends of a handshaken channel in memory, and a ``PeerConnection`` over one of them:
what the connection-timing tests (test_connection, test_keepalive) build on."""

from __future__ import annotations

import trio
import trio.testing

from node.channel.core import Channel, Role
from node.config import Config
from node.crypto.keys import IdentityKey
from node.net.connection import PeerConnection, PeerInfo
from node.net.secure_stream import SecureStream

KEY_A = IdentityKey(bytes(range(32)))
KEY_B = IdentityKey(bytes(range(32, 64)))


async def streams(lockstep: bool = False, idle: tuple[float | None, float | None] = (None, None),
                  ) -> tuple[SecureStream, SecureStream]:
    """A dialler's stream and the acceptor's, after the handshake (``lockstep``: a send
    blocks until the other side reads; ``idle``: the idle timeout each side's Hello
    states, None for none, as a node before ``idle``)."""
    pair = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    a = SecureStream(pair[0], Channel(Role.INITIATOR, KEY_A, name="alice", idle=idle[0]))
    b = SecureStream(pair[1], Channel(Role.RESPONDER, KEY_B, name="bob", idle=idle[1]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.do_handshake)
        nursery.start_soon(b.do_handshake)
    return a, b


def connection(stream: SecureStream, config: Config,
               received: list[bytes] | None = None) -> PeerConnection:
    """A connection over ``stream`` that appends what it receives to ``received``."""
    assert stream.handshake is not None
    dialler = stream.channel.role is Role.INITIATOR
    info = PeerInfo(stream.handshake.remote, stream.handshake.name, "mem",
                    "outbound" if dialler else "inbound", KEY_A.peer_id, 0.0,
                    stream.handshake.idle)

    async def on_message(conn: PeerConnection, data: bytes) -> None:
        if received is not None:
            received.append(data)

    return PeerConnection(stream, info, config, on_message)
