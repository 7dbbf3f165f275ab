"""``SecureStream``: the trio driver for a pure ``Channel`` (modelled on trio's SSLStream).

It wraps any ``trio.abc.Stream`` (a TCP socket in the node, memory streams in
tests) and offers two faces:

* messages: ``send_message`` / ``receive_message``: what the node uses. One
  call is one application message, up to the channel's cap.
* bytes: ``send_all`` / ``receive_some``, so it is a ``trio.abc.Stream`` and
  passes trio's generic stream checks. ``send_all(data)`` sends ``data`` as
  one message; ``receive_some`` hands out received message bytes in order.

Rules carried over from SSLStream: a send cancelled after its bytes were
encrypted breaks the stream (the peer would see a nonce gap) and later sends
raise ``BrokenResourceError``; two tasks sending (or receiving) at once get
``BusyResourceError``; ``aclose`` always closes, even when cancelled, and says
goodbye (a CLOSE record) when it can do so without waiting on a busy sender.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from node.channel.core import (
    NEED_DATA,
    Channel,
    ChannelClosed,
    HandshakeCompleted,
    MessageReceived,
    PingReceived,
    Role,
    State,
)
from node.errors import HandshakeError, RemoteProtocolError

RECEIVE_SIZE = 65536


class _Exclusive:
    """Raise BusyResourceError when two tasks use one direction at once."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(f"another task is already {self._what} on this stream")
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class SecureStream(trio.abc.Stream):
    """An encrypted, authenticated Kith channel over ``transport``."""

    def __init__(self, transport: trio.abc.Stream, channel: Channel) -> None:
        self.transport = transport
        self.channel = channel
        self.handshake: HandshakeCompleted | None = None
        #: ``trio.current_time()`` when the last complete, authenticated record was read
        #: (for the idle watchdog): stray bytes of an unfinished record do not count.
        self.last_received = trio.current_time()
        #: Called (synchronously, from the receiving task) for every PING record read:
        #: the connection answers PINGs (docs/protocol.md section 6).
        self.on_ping: Callable[[], None] | None = None
        self._send_guard = _Exclusive("sending")
        self._recv_guard = _Exclusive("receiving")
        self._handshake_lock = trio.Lock()
        self._inbox = bytearray()
        self._peer_closed = False
        self._closed = False
        self._broken = False
        self._sending = False
        #: Bytes written to and read from the transport (records, framing, handshake):
        #: what this channel costs on the wire, for ``kith bench``.
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- handshake --

    async def do_handshake(self) -> HandshakeCompleted:
        """Run the Noise handshake (once); raise ``HandshakeError`` if it fails."""
        async with self._handshake_lock:
            if self.handshake is None:
                self._check_open()
                self.handshake = await self._run_handshake()
                self.last_received = trio.current_time()  # a completed handshake is life
            return self.handshake

    async def _run_handshake(self) -> HandshakeCompleted:
        if self.channel.role is Role.INITIATOR:
            await self._transport_send(self.channel.start())
        while True:
            event = self.channel.next_event()
            out = self.channel.data_to_send()
            if out:
                await self._transport_send(out)
            if isinstance(event, HandshakeCompleted):
                return event
            if event is not NEED_DATA:
                raise HandshakeError(f"unexpected {event!r} during the handshake")
            await self._receive_into_channel(during_handshake=True)

    # -- sending --

    async def send_message(self, data: bytes | bytearray | memoryview) -> None:
        """Send one application message."""
        with self._send_guard:
            await self.do_handshake()
            self._check_can_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._transport_send(self.channel.send_message(bytes(data)))

    async def send_messages(self, messages: list[bytes]) -> None:
        """Send several application messages with one write to the transport (each its
        own records, in order: what a burst queued for one peer costs one syscall)."""
        with self._send_guard:
            await self.do_handshake()
            self._check_can_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            send = self.channel.send_message
            await self._transport_send(b"".join([send(m) for m in messages]))

    async def send_ping(self) -> None:
        with self._send_guard:
            await self.do_handshake()
            self._check_can_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._transport_send(self.channel.send_ping())

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            with self._send_guard:
                self._check_open()
                await trio.lowlevel.checkpoint()
            return
        await self.send_message(data)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_guard:
            self._check_open()
            await self.transport.wait_send_all_might_not_block()

    async def _transport_send(self, data: bytes) -> None:
        self._sending = True
        try:
            await self.transport.send_all(data)
            self.bytes_sent += len(data)
        except trio.ClosedResourceError:
            if self._closed:
                raise
            self._broken = True
            raise trio.BrokenResourceError("transport closed underneath the stream") from None
        except BaseException:
            # Cancelled or broken after the record was encrypted: the peer would
            # see a gap in the nonce sequence, so this stream cannot go on.
            self._broken = True
            raise
        finally:
            self._sending = False

    # -- receiving --

    async def receive_message(self) -> bytes:
        """The next application message.

        Raises ``trio.EndOfChannel`` when the peer closed cleanly,
        ``RemoteProtocolError`` (and subclasses) when it broke the protocol,
        ``trio.BrokenResourceError`` when the transport failed.
        """
        with self._recv_guard:
            await self.do_handshake()
            while True:
                self._check_open()
                if self._peer_closed:
                    await trio.lowlevel.checkpoint()
                    raise trio.EndOfChannel("peer closed the channel")
                event = self._next_channel_event()
                if isinstance(event, MessageReceived):
                    await trio.lowlevel.checkpoint()
                    return event.data
                if event is NEED_DATA:
                    await self._receive_into_channel(during_handshake=False)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            if not isinstance(max_bytes, int):
                raise TypeError("max_bytes must be an int or None")
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._recv_guard:
            try:
                await self.do_handshake()
                while not self._inbox and not self._peer_closed:
                    self._check_open()
                    event = self._next_channel_event()
                    if isinstance(event, MessageReceived):
                        self._inbox += event.data
                    elif event is NEED_DATA:
                        await self._receive_into_channel(during_handshake=False)
            except RemoteProtocolError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            self._check_open()
            await trio.lowlevel.checkpoint()
            size = len(self._inbox) if max_bytes is None else max_bytes
            chunk = bytes(self._inbox[:size])
            del self._inbox[:size]
            return chunk

    def _next_channel_event(self) -> object:
        records = self.channel.records_received
        try:
            event = self.channel.next_event()
        except RemoteProtocolError:
            self._broken = True
            raise
        finally:
            if self.channel.records_received != records:
                self.last_received = trio.current_time()
        if isinstance(event, PingReceived):
            if self.on_ping is not None:
                self.on_ping()
        elif isinstance(event, ChannelClosed):
            self._peer_closed = True
            self.close_reason = event.reason
        return event

    async def _receive_into_channel(self, *, during_handshake: bool) -> None:
        try:
            data = await self.transport.receive_some(RECEIVE_SIZE)
            self.bytes_received += len(data)
        except trio.ClosedResourceError:
            if self._closed:
                raise
            self._broken = True
            raise trio.BrokenResourceError("transport closed underneath the stream") from None
        except trio.BrokenResourceError as exc:
            self._broken = True
            if during_handshake:
                raise HandshakeError(f"connection lost during the handshake: {exc}") from exc
            raise
        self.channel.receive_data(bytes(data))

    # -- closing --

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._broken:
            raise trio.BrokenResourceError("this stream is broken")

    def _check_can_send(self) -> None:
        self._check_open()
        if self.channel.state is State.CLOSED:  # the peer said goodbye: nothing more goes out
            raise trio.BrokenResourceError("the peer closed the channel")

    async def aclose(self, reason: str = "") -> None:
        """Say goodbye if possible, then close the transport (always, even if cancelled)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if not self._broken and not self._sending and self.channel.state is State.OPEN:
                goodbye = self.channel.send_close(reason)
                await self.transport.send_all(goodbye)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        finally:
            self._inbox.clear()
            await self.transport.aclose()

    close_reason: str | None = None
