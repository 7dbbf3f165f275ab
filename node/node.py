"""``Node``: the peer manager: listeners, dialers, and one channel per peer.

A node accepts TCP connections, dials the peers it was told about, runs the
Kith handshake on each, and keeps exactly one channel per peer (see
``_register`` for how two channels to the same peer are resolved the same way
on both sides). Every connection event is logged as one readable line.

It knows nothing of groups, stores or the control socket: what arrives on a
channel goes to the ``on_message`` hook and each new channel is reported to
``on_connected``. The composition root (``node.app``) wires those to the group
service and runs LAN discovery (``node.net.lan``) and the control socket beside
the node; on its own (``run``) a node only listens and dials.

Who may connect at all (handshake slots per source address, the cap on
channels, what to do when descriptors run out) is decided by
``node.net.admission``; every line a peer can cause is logged through a
``RateLimitedLog`` (one line per source and reason per interval, with a count).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import trio

from node.channel.core import (
    Channel,
    HandshakeCompleted,
    Role,
    SelfConnectionError,
)
from node.config import Config
from node.crypto.keys import IdentityKey
from node.crypto.netkey import prologue
from node.errors import ConfigError, HandshakeError, RemoteProtocolError
from node.ids import PeerId, short_id
from node.logs import RateLimitedLog, clip
from node.mesh.state import MeshState
from node.net import admission
from node.net.address import DialTarget, format_hostport
from node.net.backoff import Backoff
from node.net.connection import (
    SHUTDOWN_REASON,
    PeerConnection,
    PeerInfo,
    explain,
    now_wall,
)
from node.net.secure_stream import SecureStream
from node.wire.announce import instance_name

log = logging.getLogger(__name__)

#: A connection that lived at least this long resets the redial backoff.
STABLE_CONNECTION = 10.0
#: Sent as the CLOSE reason to a peer that completed a handshake when the channels were full.
CHANNELS_FULL = "too many channels"

MessageHook = Callable[[PeerConnection, bytes], Awaitable[None]]
ConnectedHook = Callable[[PeerId], None]


def describe(info: PeerInfo) -> str:
    return f"{short_id(info.peer_id)} ({info.name})"


class Node:
    """A Kith peer manager. Use ``await nursery.start(node.run)``; cancel the nursery to stop.

    ``on_message(conn, data)`` gets every message from every channel;
    ``on_connected(peer)`` is called (synchronously) when a channel is admitted, and
    ``on_disconnected(peer)`` when the peer's channel is gone.
    """

    def __init__(
        self,
        identity: IdentityKey,
        config: Config,
        on_message: MessageHook | None = None,
        on_connected: ConnectedHook | None = None,
        on_disconnected: ConnectedHook | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.peer_id = identity.peer_id
        self.name = config.name
        self.connections: dict[PeerId, PeerConnection] = {}
        self.listen_addresses: list[tuple[str, int]] = []
        self.started_at = now_wall()
        self._prologue = prologue(config.network_key)
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.limits = admission.fit_to_descriptors(
            config.max_channels, config.max_handshaking, admission.descriptor_limit()
        )
        self.admission = admission.Admission(self.limits)
        #: Lines a peer can cause: at most one per (source, reason) per interval.
        self.peer_log = RateLimitedLog(log)
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.offline = False
        #: mDNS instance name, new at every start (None when mDNS is off).
        self.instance = instance_name(os.urandom) if config.mdns else None
        self.mesh = MeshState(
            self.instance,
            max_candidates=config.max_candidates,
            forget_after=config.forget_after,
            grace=config.dial_grace,
        )

    # -- public API --

    @property
    def listen(self) -> str | None:
        """``host:port`` of the first listening socket, once running."""
        if not self.listen_addresses:
            return None
        return format_hostport(*self.listen_addresses[0])

    def peers(self) -> list[PeerInfo]:
        return sorted((c.info for c in self.connections.values()), key=lambda i: i.since)

    async def run(
        self,
        peers: Sequence[DialTarget] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and dial ``peers``; runs until cancelled."""
        async with self.listening():
            for target in peers:
                self.dial(target)
            self.log_listening()
            task_status.started()
            await trio.sleep_forever()

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """Listen and serve channels for the duration of the block.

        Raises ``ConfigError`` (not wrapped in a group) if the port cannot be had.
        ``dial``, ``connect`` and ``serve_in_background`` work inside the block;
        the channels end when it does.
        """
        listeners = await self._open_listeners()
        self._log_lowered_limits()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener)
                yield
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()

    def log_listening(self) -> None:
        """The one "node ... listening on ..." line; scripts and tests wait for it, so the
        caller logs it once everything it runs beside the node is up."""
        log.info(
            "node %s (%s) listening on %s",
            short_id(self.peer_id),
            self.name,
            ", ".join(format_hostport(*a) for a in self.listen_addresses),
        )

    def dial(self, target: DialTarget) -> None:
        """Keep a channel to ``target`` up, redialling with backoff, until the node stops."""
        if self._nursery is None:
            raise RuntimeError("node is not running")
        self._nursery.start_soon(self._dial_loop, target, name=f"dial {target}")

    async def connect(self, target: DialTarget) -> PeerInfo:
        """Dial once and start serving the channel; raise if it cannot be set up."""
        if self._nursery is None:
            raise RuntimeError("node is not running")
        conn = await self._connect(target)
        self._nursery.start_soon(self._serve, conn, "manual")
        return conn.info

    async def send_to(self, peer: PeerId, data: bytes) -> bool:
        """Send one message to a connected peer; False if it is not (or no longer) connected."""
        conn = self.connections.get(peer)
        return conn is not None and await conn.send(data)

    def set_offline(self, offline: bool) -> None:
        """Airplane mode: drop every channel and refuse and stop dialling (until back).

        The node keeps running: its groups keep accepting what the user writes
        (into the outbox), which goes out when it is back online. Used by
        ``kith demo`` and by tests of partitions on one machine.
        """
        self.offline = offline
        if offline:
            for conn in list(self.connections.values()):
                conn.close("went offline")
        log.info("now %s", "offline" if offline else "online")
        self._notify()

    def broadcast(self, data: bytes) -> int:
        """Queue ``data`` for every connected peer without waiting; return how many took it.

        A peer whose queue is full is dropped (it stopped reading); the others
        are not slowed down by it.
        """
        return sum(conn.send_nowait(data) for conn in list(self.connections.values()))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after each peer change."""
        while not predicate():
            await self._changed.wait()

    async def _wait_disconnected(self, peer: PeerId) -> None:
        await self.wait_until(lambda: peer not in self.connections)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- listening --

    async def _open_listeners(self) -> list[trio.SocketListener]:
        listeners = await open_listeners(self.config.listen_host, self.config.listen_port)
        self.listen_addresses = [lst.socket.getsockname()[:2] for lst in listeners]
        return listeners

    def _log_lowered_limits(self) -> None:
        cfg, lim = self.config, self.limits
        if (lim.channels, lim.handshakes) != (cfg.max_channels, cfg.max_handshaking):
            log.warning(
                "descriptor limit %d (ulimit -n): at most %d channels and %d handshakes "
                "at once instead of %d and %d",
                admission.descriptor_limit(), lim.channels, lim.handshakes,
                cfg.max_channels, cfg.max_handshaking,
            )

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            stream = await admission.accept(listener, self.peer_log, "connections")
            if self.offline:
                stream.socket.close()
                continue
            try:
                host, port = stream.socket.getpeername()[:2]
            except OSError:  # already reset by the peer
                stream.socket.close()
                continue
            refusal = self.admission.admit(host, len(self.connections))
            if refusal is not None:
                stream.socket.close()
                self._log_refusal(refusal, host)
                continue
            assert self._nursery is not None
            self._nursery.start_soon(self._handle_inbound, stream, host, port)
            self._notify()  # a handshake slot is taken

    def _log_refusal(self, refusal: admission.Refusal, host: str) -> None:
        lim = self.limits
        if refusal is admission.Refusal.CHANNELS:
            self.peer_log.warning(
                (refusal,),
                "refusing new connections: %d channels open (the limit, see --max-channels)",
                lim.channels,
            )
        elif refusal is admission.Refusal.HANDSHAKES:
            self.peer_log.warning(
                (refusal,),
                "refusing new connections: %d handshakes already in progress (the limit)",
                lim.handshakes,
            )
        else:
            self.peer_log.warning(
                (refusal, host),
                "refusing connections from %s: %d handshakes from that address already "
                "in progress (its share of %d)",
                host, lim.per_address, lim.handshakes,
            )

    async def _handle_inbound(self, tcp: trio.SocketStream, host: str, port: int) -> None:
        where = format_hostport(host, port)
        try:
            stream = SecureStream(tcp, self._channel(Role.RESPONDER))
            try:
                hs = await self._handshake(stream)
            except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError, OSError) as exc:
                self.peer_log.warning((host, type(exc).__name__),
                                      "rejected connection from %s: %s", where, clip(explain(exc)))
                await trio.aclose_forcefully(tcp)
                return
        finally:
            self.admission.done(host)
            self._notify()  # a handshake slot is free (``wait_until`` callers re-check)
        info = PeerInfo(hs.remote, hs.name, where, "inbound", hs.remote, now_wall(), hs.idle)
        conn = PeerConnection(stream, info, self.config, self._dispatch)
        if len(self.connections) >= self.limits.channels and hs.remote not in self.connections:
            self._log_refusal(admission.Refusal.CHANNELS, host)
            conn.close(CHANNELS_FULL)
            await conn.run()  # says goodbye with the reason and ends
            return
        await self._serve(conn, "inbound", hs.instance)

    # -- dialling --

    async def _dial_loop(self, target: DialTarget) -> None:
        cfg = self.config
        backoff = Backoff(cfg.redial_initial, cfg.redial_max, cfg.redial_jitter)
        known = target.expected
        where = format_hostport(target.host, target.port)
        self.mesh.manual[where] = known
        while True:
            await self.wait_until(lambda: not self.offline)
            if known is not None and known in self.connections:
                await self._wait_disconnected(known)
            try:
                conn = await self._connect(target)
            except SelfConnectionError:
                log.warning("not dialling %s: it is this node itself", target)
                return
            except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError, OSError) as exc:
                level = logging.WARNING if backoff.failures == 0 else logging.DEBUG
                delay = backoff.next_delay()
                log.log(level, "cannot connect to %s: %s; retrying in %.1f s (then quietly)",
                        target, explain(exc), delay)
                await trio.sleep(delay)
                continue
            known = self.mesh.manual[where] = conn.info.peer_id
            started = trio.current_time()
            await self._serve(conn, "manual")
            if trio.current_time() - started >= STABLE_CONNECTION:
                backoff.reset()
            await trio.sleep(backoff.next_delay())

    async def _connect(self, target: DialTarget) -> PeerConnection:
        where = format_hostport(target.host, target.port)
        try:
            with trio.fail_after(self.config.handshake_timeout):
                tcp = await trio.open_tcp_stream(target.host, target.port)
        except trio.TooSlowError:
            raise HandshakeError("connect timed out") from None
        stream = SecureStream(tcp, self._channel(Role.INITIATOR, target.expected))
        try:
            hs = await self._handshake(stream)
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        info = PeerInfo(hs.remote, hs.name, where, "outbound", self.peer_id, now_wall(),
                        hs.idle)
        return PeerConnection(stream, info, self.config, self._dispatch)

    # -- channels --

    def _channel(self, role: Role, expected: PeerId | None = None) -> Channel:
        return Channel(
            role,
            self.identity,
            name=self.name,
            prologue=self._prologue,
            expected_peer=expected,
            instance=self.instance,
            idle=self.config.idle_timeout,
            max_message_size=self.config.max_message_size,
        )

    async def _handshake(self, stream: SecureStream) -> HandshakeCompleted:
        timeout = self.config.handshake_timeout
        with trio.move_on_after(timeout) as scope:
            return await stream.do_handshake()
        assert scope.cancelled_caught
        raise HandshakeError(f"no handshake within {timeout:g} s")

    async def _serve(
        self, conn: PeerConnection, found: str, instance: str | None = None
    ) -> None:
        """Run ``conn`` until it ends. ``found``: how we came to it (mdns, manual, inbound)."""
        if self._admit(conn, found, instance):
            await self._run_admitted(conn)
        else:
            await conn.run()  # the duplicate: says goodbye and ends

    def _admit(self, conn: PeerConnection, found: str, instance: str | None) -> bool:
        """Register a new channel (synchronously); False if it lost the duplicate rule."""
        if self.offline:
            conn.close("went offline")
            return False
        if not self._register(conn):
            log.debug("closing duplicate channel to %s", describe(conn.info))
            conn.close("duplicate")
            return False
        info = conn.info
        self.mesh.connected(info.peer_id, info.name, info.address, now_wall(),
                            found=found, instance=instance)
        self._notify()
        log.info("connected to %s at %s (%s)", describe(info), info.address, info.direction)
        if self._on_connected is not None:
            self._on_connected(info.peer_id)
        return True

    async def _run_admitted(self, conn: PeerConnection) -> None:
        info = conn.info
        try:
            await conn.run()
        finally:
            if self.connections.get(info.peer_id) is conn:
                del self.connections[info.peer_id]
                self.mesh.disconnected(info.peer_id, now_wall())
                self._notify()
                if self._on_disconnected is not None:
                    self._on_disconnected(info.peer_id)
            reason = conn.close_reason
            if reason == SHUTDOWN_REASON:  # ours, not the peer's
                reason = "this node is shutting down"
            log.info("disconnected from %s: %s", describe(info), reason)

    def serve_in_background(
        self, conn: PeerConnection, found: str, instance: str | None = None
    ) -> None:
        """Admit ``conn`` now and run it in the node's nursery (outliving the caller)."""
        assert self._nursery is not None
        if self._admit(conn, found, instance):
            self._nursery.start_soon(self._run_admitted, conn)
        else:
            self._nursery.start_soon(conn.run)

    def _register(self, conn: PeerConnection) -> bool:
        """Keep one channel per peer; both sides pick the same survivor.

        Of two channels to one peer, the one dialled by the node with the
        smaller peer id survives; if both were dialled by the same node (a
        redial while the old channel had not yet been noticed dead), the newer
        one survives.
        """
        pid = conn.info.peer_id
        existing = self.connections.get(pid)
        if existing is not None:
            preferred = min(self.peer_id, pid)
            same_dialler = conn.info.initiator == existing.info.initiator
            if not same_dialler and conn.info.initiator != preferred:
                return False
            existing.close("replaced by a newer connection" if same_dialler else "duplicate")
        self.connections[pid] = conn
        return True

    async def _dispatch(self, conn: PeerConnection, data: bytes) -> None:
        if self._on_message is not None:
            await self._on_message(conn, data)
        else:
            self.peer_log.log((conn.info.peer_id, "ignored"), logging.DEBUG,
                              "ignoring %d-byte message from %s", len(data), describe(conn.info))


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """TCP listeners on ``host:port``, or the node's one-line "cannot listen" error."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (another node running? use --listen HOST:0 for any free port)"
        raise ConfigError(
            f"cannot listen on {format_hostport(host, port)}: {exc.strerror}{hint}") from exc
