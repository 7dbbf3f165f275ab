"""``PeerConnection``: one authenticated channel to one peer, kept alive (trio driver).

It owns four loops in one nursery: the receiver (hands each message to the
node), the sender (drains a bounded per-peer queue), the keepalive (a PING
after ``keepalive_interval`` seconds without sending) and the watchdog (closes
the channel when no complete, authenticated record has arrived for
``idle_timeout`` seconds: the peer is gone even if TCP has not noticed, or it is
only dripping bytes of a record it never finishes).

Sends are serialised by a lock and bounded by ``send_timeout``: a peer that
stops reading is dropped instead of stalling whoever is sending to it.
``send_nowait`` never blocks at all: it queues (at most ``send_queue``
messages) and a full queue drops the peer, so fanning a message out to many
peers costs the sender nothing per slow peer. When the sender task wakes it
takes everything queued (up to ``SEND_BATCH_BYTES``) and writes it with one
``send_all``: a burst costs one syscall per wake-up, not one per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from node.channel.core import SelfConnectionError, UnexpectedPeerError
from node.config import Config
from node.errors import HandshakeError, RemoteProtocolError
from node.ids import PeerId
from node.logs import clip
from node.net.secure_stream import SecureStream

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT = 1.0
#: The sender task writes what is queued in one go, up to about this many bytes.
SEND_BATCH_BYTES = 256 * 1024
SHUTDOWN_REASON = "node shutting down"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: PeerId
    name: str
    address: str
    direction: str  # "inbound" | "outbound"
    initiator: PeerId  # who dialled: decides which of two duplicate channels survives
    since: float  # wall-clock seconds since the epoch


MessageHandler = Callable[["PeerConnection", bytes], Awaitable[None]]


class PeerConnection:
    def __init__(
        self, stream: SecureStream, info: PeerInfo, config: Config, on_message: MessageHandler
    ) -> None:
        self.stream = stream
        self.info = info
        self._config = config
        self._on_message = on_message
        self._send_lock = trio.Lock()
        self._queue_in, self._queue_out = trio.open_memory_channel[bytes](config.send_queue)
        self._progress = trio.Event()  # set whenever the sender took a message off the queue
        self._last_sent = trio.current_time()
        self._cancel = trio.CancelScope()
        self.close_reason = ""

    async def run(self) -> str:
        """Serve the channel until it ends; return why it ended, in words."""
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keepalive)
                    nursery.start_soon(self._watchdog)
                    nursery.start_soon(self._sender)
                    await self._receive_loop()
                    nursery.cancel_scope.cancel()
        finally:
            # Cancelled from outside (the node is stopping) unless a reason was set.
            if not self.close_reason:
                self.close_reason = SHUTDOWN_REASON
            await self._goodbye(self.close_reason)
        return self.close_reason

    async def _receive_loop(self) -> None:
        try:
            while True:
                data = await self.stream.receive_message()
                await self._on_message(self, data)
        except trio.EndOfChannel:
            # The reason is the peer's text: make it safe to log or show, as one short line.
            reason = clip(self.stream.close_reason or "")
            self.close(f"peer left ({reason})" if reason else "peer closed the connection")
        except RemoteProtocolError as exc:
            self.close(f"protocol error: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close(_lost(exc))
        except OSError as exc:
            self.close(f"connection lost: {exc.strerror or exc}")

    async def _keepalive(self) -> None:
        interval = self._config.keepalive_interval
        while True:
            await trio.sleep_until(self._last_sent + interval)
            if trio.current_time() >= self._last_sent + interval:
                try:
                    await self._send(None)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.close(_lost(exc))
                    return

    async def _watchdog(self) -> None:
        timeout = self._config.idle_timeout
        while True:
            deadline = self.stream.last_received + timeout
            if trio.current_time() >= deadline:
                self.close(f"no data from peer for {timeout:g} s")
                return
            await trio.sleep_until(deadline)

    async def send(self, data: bytes) -> bool:
        """Send one message; False (and the channel is closing) if the peer is unusable."""
        try:
            await self._send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close(_lost(exc))
            return False
        return not self._cancel.cancel_called

    def send_nowait(self, data: bytes) -> bool:
        """Queue one message; False (and the peer is dropped) if the queue is full or closed."""
        if self._cancel.cancel_called:
            return False
        try:
            self._queue_in.send_nowait(data)
        except trio.WouldBlock:
            self.close(f"peer too slow ({self._config.send_queue} messages queued)")
            return False
        return True

    def queued(self) -> int:
        return self._queue_in.statistics().current_buffer_used

    async def wait_queue_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` messages are queued (or the channel is closing)."""
        while self.queued() >= limit and not self._cancel.cancel_called:
            await self._progress.wait()

    async def _sender(self) -> None:
        async for data in self._queue_out:
            batch, size = [data], len(data)
            while size < SEND_BATCH_BYTES:  # and whatever else is queued by now
                try:
                    more = self._queue_out.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batch.append(more)
                size += len(more)
            self._progress.set()
            self._progress = trio.Event()
            try:
                await self._send(batch)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.close(_lost(exc))
                return

    async def _send(self, data: bytes | list[bytes] | None) -> None:
        timeout = self._config.send_timeout
        async with self._send_lock:
            with trio.move_on_after(timeout) as scope:
                if data is None:
                    await self.stream.send_ping()
                elif isinstance(data, list):
                    await self.stream.send_messages(data)
                else:
                    await self.stream.send_message(data)
                self._last_sent = trio.current_time()
            if scope.cancelled_caught:
                self.close(f"peer stopped reading (a send took over {timeout:g} s)")

    def close(self, reason: str) -> None:
        """Ask the connection to end (from any task); ``run`` returns ``reason``."""
        if not self.close_reason:
            self.close_reason = reason
        self._cancel.cancel()
        self._progress.set()

    async def _goodbye(self, reason: str) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(GOODBYE_TIMEOUT) as scope:
            await self.stream.aclose(reason)
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.stream.transport)


def now_wall() -> float:
    return time.time()


def _lost(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"connection lost: {cause}" if str(cause) else "connection lost"


def explain(exc: BaseException) -> str:
    """One line on why a dial or handshake failed."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnexpectedPeerError | SelfConnectionError):
        return str(exc)
    if isinstance(exc, HandshakeError):
        return f"handshake failed: {exc}"
    if isinstance(exc, RemoteProtocolError):
        return f"protocol error: {exc}"
    cause = exc.__cause__
    return str(exc) or (str(cause) if cause else type(exc).__name__)
