"""A hostile peer: a real channel (TCP + Noise) to a node, spoken by hand.

Theory of operation: ``hostile_peer(host, port, key)`` dials the node and runs
the real handshake with the node's own ``SecureStream``, so everything it then
sends reaches the node exactly as a modified client's bytes would. For the
duration of the ``async with`` block a reader task takes in whatever the node
sends: events are acknowledged (an acker task sends the acks, so the reader
never waits behind our own sends and the node is never left blocked on us),
and ``nochunk`` answers are noted for ``barrier``.

``barrier()`` asks for a chunk of a group nobody has; every node answers that
with ``nochunk`` (members or not) in the order it handles the channel's
messages, so once the answer is back everything sent before it has been handled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from node.bench.harness import BenchError
from node.channel.core import Channel, Role
from node.crypto.keys import IdentityKey
from node.errors import HandshakeError, RemoteProtocolError
from node.files.attachment import HASH_LEN
from node.group.events import EventError, decode_event
from node.ids import GroupId, PeerId, short_id
from node.net.secure_stream import SecureStream
from node.wire.messages import (
    AckMessage,
    EventsMessage,
    NoChunkMessage,
    WantMessage,
    decode_message,
    encode_message,
)

#: Seconds for a handshake, and for the node to answer a barrier.
ANSWER_TIMEOUT = 30.0


class RefusedError(BenchError):
    """The node refused the channel (or closed it during the handshake)."""


class HostilePeer:
    """One identity's channel to the node (see the module docstring)."""

    def __init__(self, key: IdentityKey, stream: SecureStream) -> None:
        self.key = key
        self.stream = stream
        self.messages_sent = 0
        #: Raw events the node sent us, per group, in the order they came.
        self.events: dict[GroupId, list[bytes]] = {}
        self._nochunks: set[bytes] = set()
        #: The node closed the channel (or broke the protocol): nothing more will come.
        self.closed = False
        self._changed = trio.Event()
        self._lock = trio.Lock()
        self._acks_in, self._acks_out = trio.open_memory_channel[bytes](1024)

    @property
    def peer_id(self) -> PeerId:
        return self.key.peer_id

    @property
    def short(self) -> str:
        return short_id(self.peer_id)

    @property
    def bytes_sent(self) -> int:
        return self.stream.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.stream.bytes_received

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self.stream.send_message(data)
        self.messages_sent += 1

    async def barrier(self) -> None:
        """Return once the node has handled everything we sent before."""
        address = os.urandom(HASH_LEN)
        await self.send(encode_message(WantMessage(GroupId(os.urandom(32)), (address,))))
        await self._wait(lambda: address in self._nochunks, "answer a barrier")

    async def wait_events(self, group: GroupId, count: int) -> None:
        """Wait until the node has sent us ``count`` events of ``group``."""
        await self._wait(lambda: len(self.events.get(group, ())) >= count,
                         f"send {count} events")

    async def _wait(self, done: Callable[[], bool], what: str) -> None:
        with trio.move_on_after(ANSWER_TIMEOUT):
            while not done():
                if self.closed:
                    raise RefusedError(f"the node closed the channel of {self.short} "
                                       f"instead of being asked to {what}")
                await self._changed.wait()
            return
        raise RefusedError(f"the node did not {what} within {ANSWER_TIMEOUT:g} s")

    async def _read(self) -> None:
        while True:
            try:
                data = await self.stream.receive_message()
                message = decode_message(data)
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError,
                    RemoteProtocolError):
                self.closed = True
                self._notify()
                return
            if isinstance(message, NoChunkMessage):
                self._nochunks.update(message.addresses)
            elif isinstance(message, EventsMessage):
                self.events.setdefault(message.group, []).extend(message.events)
                ids = []
                for raw in message.events:
                    try:
                        ids.append(decode_event(raw).id)
                    except EventError:
                        continue
                # Behind on acks (the queue is full): the node resends what it misses.
                with contextlib.suppress(trio.WouldBlock):
                    self._acks_in.send_nowait(encode_message(AckMessage(message.group,
                                                                        tuple(ids))))
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _ack(self) -> None:
        async for data in self._acks_out:
            try:
                await self.send(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def handshake(host: str, port: int, key: IdentityKey) -> SecureStream:
    """A completed channel with ``key`` to the node; ``RefusedError`` if it is refused."""
    tcp = await trio.open_tcp_stream(host, port)
    stream = SecureStream(tcp, Channel(Role.INITIATOR, key, name="hostile"))
    try:
        with trio.fail_after(ANSWER_TIMEOUT):
            await stream.do_handshake()
    except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError) as exc:
        await trio.aclose_forcefully(tcp)
        raise RefusedError(f"the node refused a channel: {exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


@asynccontextmanager
async def hostile_peer(
    host: str, port: int, key: IdentityKey | None = None
) -> AsyncIterator[HostilePeer]:
    """A ``HostilePeer`` (a throwaway identity unless ``key``) for the block."""
    key = IdentityKey.generate() if key is None else key
    peer = HostilePeer(key, await handshake(host, port, key))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer._read)
            nursery.start_soon(peer._ack)
            yield peer
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader and the acker never raise: a group holds what the block raised.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(peer.stream)
