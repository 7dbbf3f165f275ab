"""Helpers for integration tests: in-process nodes over real loopback TCP.

Nothing here sleeps. Tests wait for something to happen (a connection, a
message, a log line) under ``trio.fail_after``:

* ``start_node`` runs a ``Node`` on ``127.0.0.1:0`` in its own cancel scope, so
  a test can stop one node (``await running.stop()``) and keep the others.
* ``Inbox`` is an ``on_message`` hook that queues ``(peer, data)``.
* ``LogWatch`` reads pytest's ``caplog`` records and lets a test wait until a
  record matching a pattern has been logged. Nodes log from trio tasks on the
  test's thread, so the handler can wake trio waiters directly.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from node.config import Config
from node.crypto.keys import IdentityKey
from node.ids import PeerId
from node.net.address import DialTarget
from node.net.connection import PeerConnection
from node.net.lan import DiscoverySource, LanDiscovery
from node.node import Node

#: Generous bound for "this should happen soon" on a loaded machine.
SOON = 5.0
#: The logger of the node's one-line connection events.
NODE_LOG = "node.node"


def config(name: str, **overrides: Any) -> Config:
    """A loopback config with small timeouts; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "name": name,
        "handshake_timeout": 2.0,
        "keepalive_interval": 1.0,
        "idle_timeout": 5.0,
        "send_timeout": 5.0,
        "redial_initial": 0.05,
        "redial_max": 0.2,
    }
    fields.update(overrides)
    return Config(**fields)


class Inbox:
    """An ``on_message`` hook that queues every message it is given."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[PeerId, bytes]](math.inf)

    async def __call__(self, conn: PeerConnection, data: bytes) -> None:
        self._send.send_nowait((conn.info.peer_id, data))

    async def get(self) -> tuple[PeerId, bytes]:
        """The next message; fail if none arrives ``SOON``."""
        with trio.fail_after(SOON):
            return await self._receive.receive()


@dataclass
class RunningNode:
    """A node started by ``start_node``; ``stop()`` cancels only this node."""

    node: Node
    inbox: Inbox
    discovery: DiscoverySource | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def peer_id(self) -> PeerId:
        return self.node.peer_id

    @property
    def port(self) -> int:
        return self.node.listen_addresses[0][1]

    def target(self, expected: PeerId | None = None) -> DialTarget:
        return DialTarget("127.0.0.1", self.port, expected)

    async def stop(self) -> None:
        self.scope.cancel()
        with trio.fail_after(SOON):
            await self.stopped.wait()

    async def _run(
        self, peers: Sequence[DialTarget], *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            with self.scope:
                if self.discovery is None:
                    await self.node.run(peers, task_status=task_status)
                    return
                async with self.node.listening(), trio.open_nursery() as nursery:
                    for target in peers:
                        self.node.dial(target)
                    await nursery.start(LanDiscovery(self.node, self.discovery).run)
                    task_status.started()
        finally:
            self.stopped.set()


async def start_node(
    nursery: trio.Nursery,
    name: str,
    *,
    identity: IdentityKey | None = None,
    peers: Sequence[DialTarget] = (),
    discovery: DiscoverySource | None = None,
    **overrides: Any,
) -> RunningNode:
    """Start a node listening on 127.0.0.1 (port 0 unless ``listen_port`` is given).

    With ``discovery`` (a fake mDNS source) LAN discovery runs on it beside the node.
    """
    inbox = Inbox()
    if discovery is not None:
        overrides.setdefault("mdns", True)
    node = Node(identity or IdentityKey.generate(), config(name, **overrides), on_message=inbox)
    running = RunningNode(node, inbox, discovery)
    await nursery.start(running._run, peers)
    return running


def has_channel(a: RunningNode, b: RunningNode) -> Callable[[], bool]:
    """A ``wait_until`` predicate: ``a`` has a channel to ``b``."""
    return lambda: b.peer_id in a.node.connections


async def wait_connected(*pairs: tuple[RunningNode, RunningNode]) -> None:
    """Wait until, for each ``(a, b)``, ``a`` has a channel to ``b``."""
    with trio.fail_after(SOON):
        for a, b in pairs:
            await a.node.wait_until(has_channel(a, b))


async def exchange(a: RunningNode, b: RunningNode, tag: bytes = b"") -> None:
    """One message each way between two connected nodes; fail if either is lost."""
    ping, pong = b"ping from a " + tag, b"pong from b " + tag
    assert await a.node.send_to(b.peer_id, ping)
    assert await b.inbox.get() == (a.peer_id, ping)
    assert await b.node.send_to(a.peer_id, pong)
    assert await a.inbox.get() == (b.peer_id, pong)


class LogWatch(logging.Handler):
    """Wait for log records captured by ``caplog`` (use the ``logs`` fixture)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        super().__init__(logging.DEBUG)
        self.caplog = caplog
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # Node records come from trio tasks on this thread; wake whoever waits.
        # (A record from another thread is still in caplog, seen at the next wake-up.)
        if trio.lowlevel.in_trio_task():
            self._changed.set()
            self._changed = trio.Event()

    def matching(
        self, pattern: str, *, logger: str | None = None, level: int = logging.DEBUG
    ) -> list[str]:
        """Messages of records at ``level`` or above from ``logger`` that match ``pattern``."""
        regex = re.compile(pattern)
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.levelno >= level
            and (logger is None or r.name == logger)
            and regex.search(r.getMessage())
        ]

    async def wait_for(
        self,
        pattern: str,
        *,
        count: int = 1,
        logger: str | None = None,
        level: int = logging.DEBUG,
    ) -> list[str]:
        """Wait (at most ``SOON``) until ``count`` matching messages were logged; return them."""
        try:
            with trio.fail_after(SOON):
                while len(found := self.matching(pattern, logger=logger, level=level)) < count:
                    await self._changed.wait()
        except trio.TooSlowError:
            raise AssertionError(
                f"no {count} log record(s) matching {pattern!r} within {SOON:g} s; "
                f"log so far:\n{self.caplog.text}"
            ) from None
        return found


def one_line(messages: Sequence[str]) -> None:
    """Assert every message is a single, non-empty line (a "clear reason in one line")."""
    for message in messages:
        assert message.strip(), "empty log message"
        assert "\n" not in message, f"multi-line log message: {message!r}"
        assert "Traceback" not in message


@contextmanager
def watching_logs(caplog: pytest.LogCaptureFixture) -> Iterator[LogWatch]:
    """Capture every record at DEBUG and above; yield a ``LogWatch`` over them."""
    caplog.set_level(logging.DEBUG)
    watch = LogWatch(caplog)
    root = logging.getLogger()
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
