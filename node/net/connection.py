"""``PeerConnection``: one authenticated channel to one peer, kept alive (trio driver).

It owns three loops in one nursery: the receiver (hands each message to the
node), the sender (drains a bounded per-peer queue) and liveness, which sends
PINGs by the rules of docs/protocol.md section 6 and closes the channel when no
complete, authenticated record has arrived for ``idle_timeout`` seconds (the
peer is gone even if TCP has not noticed, or it is only dripping bytes of a
record it never finishes).

Liveness, theory of operation. An idle group keeps N(N-1)/2 channels open, so
an idle channel must cost next to nothing: only the side that dialled probes,
with a PING once neither side has sent anything for ``keepalive_interval``
seconds (sooner if the acceptor's Hello states an idle timeout that needs it,
or states none: a node before ``idle``, which gives up after 100 s; see
``probe_after``), and the other side answers a PING with a PING at once (unless it sent
something within the answer window, which the prober has then heard). Two more
rules keep every peer hearing from us in time, nodes of the previous version
included (they PING after 8 s without sending and give up after 25 s of
silence): a PING is answered whoever sent it, and application data we received
is answered within ``REPLY_AFTER`` seconds (a PING if nothing else went out),
so a peer that sends and never hears back does not drop us. A PING that arrives
within the answer window after our own send is taken as an answer, never
answered: two probes cannot start a ping-pong. The liveness task sleeps in one
cancel scope whose deadline the receiving side moves earlier when an answer
falls due: no task wakes for data that needs no answer yet.

A dead link or host is the kernel's to notice, at no cost to us while idle: a
TCP channel gets TCP keepalive and ``TCP_USER_TIMEOUT`` so that the socket
fails ``dead_link_timeout`` (25 s) after the peer's machine last answered,
idle or not (docs/protocol.md section 6). ``idle_timeout`` is then only for a
peer whose machine answers but whose node does not (stopped, hung, dripping).

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
import math
import socket
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
#: Application data received is answered (with a PING if nothing else) after at most this
#: many seconds without sending: what a peer of the previous version, which gives up after
#: 25 s of silence, needs to hear while it streams to us (docs/protocol.md section 6).
REPLY_AFTER = 8.0
#: The idle timeout of a peer whose Hello does not state one (the nodes before ``idle``).
LEGACY_IDLE = 100.0
#: The dialler probes this long before the acceptor's idle timeout would run out (the
#: answer window, scheduling and the network fit in it with room to spare).
PROBE_MARGIN = 40.0


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: PeerId
    name: str
    address: str
    direction: str  # "inbound" | "outbound"
    initiator: PeerId  # who dialled: decides which of two duplicate channels survives
    since: float  # wall-clock seconds since the epoch
    #: The peer's idle timeout from its Hello (None: an earlier node; LEGACY_IDLE).
    peer_idle: float | None = None


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
        #: When we owe the peer a sign of life: the first message received since our
        #: last send (answered REPLY_AFTER later), or a PING to answer (at once).
        self._owed_since: float | None = None
        self._answer_due = math.inf
        self._nap = trio.CancelScope()  # the liveness task's sleep; its deadline moves
        self._cancel = trio.CancelScope()
        self.close_reason = ""
        stream.on_ping = self._on_ping
        if isinstance(stream.transport, trio.SocketStream):
            _watch_link(stream.transport, config.dead_link_timeout)

    async def run(self) -> str:
        """Serve the channel until it ends; return why it ended, in words."""
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._liveness)
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
                if self._owed_since is None:
                    now = self._owed_since = trio.current_time()
                    self._wake_by(now + REPLY_AFTER)
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

    def _on_ping(self) -> None:
        """A PING arrived: answer it at once, unless we sent something within the answer
        window (then the peer has heard from us, or this PING answers ours)."""
        now = trio.current_time()
        if now - self._last_sent >= self._answer_window:
            self._answer_due = now
            self._wake_by(now)

    @property
    def _answer_window(self) -> float:
        return min(self._config.keepalive_interval, REPLY_AFTER) / 2

    def _wake_by(self, when: float) -> None:
        if when < self._nap.deadline:
            self._nap.deadline = when

    def _ping_due(self) -> float:
        """When the next PING is due if nothing else is sent (see the module docstring)."""
        due = self._answer_due
        if self._owed_since is not None:
            due = min(due, self._owed_since + REPLY_AFTER)
        if self.info.direction == "outbound":  # the dialler probes a quiet channel
            quiet = max(self.stream.last_received, self._last_sent)
            due = min(due, quiet + self.probe_after)
        return due

    @property
    def probe_after(self) -> float:
        """Seconds of quiet after which the dialler probes: ``keepalive_interval``, or
        sooner if the peer would give up before the probe and its answer (its Hello's
        ``idle`` less PROBE_MARGIN, but never sooner than half of it, nor than the
        answer window: a peer stating a tiny timeout gets no more PINGs than it could
        have us send by PINGing us)."""
        idle = self.info.peer_idle or LEGACY_IDLE
        return min(self._config.keepalive_interval,
                   max(idle - PROBE_MARGIN, idle / 2, self._answer_window))

    async def _liveness(self) -> None:
        timeout = self._config.idle_timeout
        while True:
            now = trio.current_time()
            deadline = self.stream.last_received + timeout
            if now >= deadline:
                self.close(f"no data from peer for {timeout:g} s")
                return
            due = self._ping_due()
            if now >= due:
                try:
                    await self._send(None)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.close(_lost(exc))
                    return
                continue
            with trio.CancelScope(deadline=min(due, deadline)) as self._nap:
                await trio.sleep_forever()

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
                self._owed_since = None  # whatever we sent answers what we owed
                self._answer_due = math.inf
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


def _watch_link(tcp: trio.SocketStream, dead_after: float) -> None:
    """Let the kernel find a dead link: keepalive probes after 40 % of ``dead_after``
    idle, every 20 %, three unanswered fail the socket, and unacknowledged data fails
    it after ``dead_after`` too. Best effort: an option this system lacks is skipped."""
    options = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
               (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 0.4 * dead_after),
               (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 0.2 * dead_after),
               (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
               (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None),
                1000 * dead_after))
    for level, option, value in options:
        if option is None:
            continue
        try:
            tcp.setsockopt(level, option, max(1, round(value)))
        except OSError as exc:
            log.debug("cannot set TCP option %s: %s", option, exc)


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
