"""SecureStream over in-memory streams: trio's generic stream checks, messages, breakage."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.channel.core import Channel, Role
from node.crypto.keys import IdentityKey
from node.errors import DecryptError, HandshakeError
from node.net.secure_stream import SecureStream

KEY_A = IdentityKey(bytes(range(32)))
KEY_B = IdentityKey(bytes(range(32, 64)))


def _pair(
    a_t: trio.abc.Stream, b_t: trio.abc.Stream, **kwargs: object
) -> tuple[SecureStream, SecureStream]:
    a = SecureStream(a_t, Channel(Role.INITIATOR, KEY_A, name="alice", **kwargs))  # type: ignore[arg-type]
    b = SecureStream(b_t, Channel(Role.RESPONDER, KEY_B, name="bob", **kwargs))  # type: ignore[arg-type]
    return a, b


async def _handshaken(a: SecureStream, b: SecureStream) -> tuple[SecureStream, SecureStream]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.do_handshake)
        nursery.start_soon(b.do_handshake)
    return a, b


async def memory_pair() -> tuple[SecureStream, SecureStream]:
    return await _handshaken(*_pair(*trio.testing.memory_stream_pair()))


async def clogged_pair() -> tuple[SecureStream, SecureStream]:
    return await _handshaken(*_pair(*trio.testing.lockstep_stream_pair()))


async def test_trio_two_way_stream_conformance() -> None:
    await trio.testing.check_two_way_stream(memory_pair, clogged_pair)


async def test_handshake_reports_peer_identities() -> None:
    a, b = await memory_pair()
    assert a.handshake is not None and a.handshake.remote == KEY_B.peer_id
    assert b.handshake is not None and b.handshake.name == "alice"


async def test_messages_keep_their_boundaries() -> None:
    a, b = await memory_pair()
    messages = [b"", b"x", bytes(70_000), bytes(range(256)) * 4096]
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            for m in messages:
                await a.send_message(m)
            await a.aclose("done")

        nursery.start_soon(sender)
        got = [await b.receive_message() for _ in messages]
        with pytest.raises(trio.EndOfChannel):
            await b.receive_message()
    assert got == messages
    assert b.close_reason == "done"


async def test_corrupted_record_raises_decrypt_error_and_breaks_the_stream() -> None:
    a_t, b_t = trio.testing.memory_stream_pair()
    a, b = await _handshaken(*_pair(a_t, b_t))
    wire = bytearray(a.channel.send_message(b"secret"))
    wire[-3] ^= 0x40
    await a_t.send_all(bytes(wire))
    with pytest.raises(DecryptError):
        await b.receive_message()
    with pytest.raises(trio.BrokenResourceError):
        await b.receive_message()


async def test_handshake_with_a_silent_eof_is_a_handshake_error() -> None:
    a_t, b_t = trio.testing.memory_stream_pair()
    _, b = _pair(a_t, b_t)
    await a_t.aclose()
    with pytest.raises(HandshakeError, match="closed during the handshake"):
        await b.do_handshake()


async def test_cancelled_send_breaks_the_stream(autojump_clock: trio.testing.MockClock) -> None:
    a, b = await clogged_pair()
    with trio.move_on_after(0.1):
        await a.send_message(b"never read")  # lockstep: blocks until b reads
    with pytest.raises(trio.BrokenResourceError):
        await a.send_message(b"after")
    await a.aclose()
    await b.aclose()


async def test_sending_after_the_peer_said_goodbye_is_a_broken_stream() -> None:
    a, b = await memory_pair()
    await a.aclose("bye")
    with pytest.raises(trio.EndOfChannel):
        await b.receive_message()
    with pytest.raises(trio.BrokenResourceError, match="peer closed"):
        await b.send_message(b"too late")
    with pytest.raises(trio.BrokenResourceError, match="peer closed"):
        await b.send_ping()
