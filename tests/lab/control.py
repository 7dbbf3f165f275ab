"""A node's control socket, spoken directly: one call, or a group log followed live.

Theory of operation: the ``kith`` client refuses answers over 1 MiB
(``protocol.MAX_LINE``), which a log of about 2,000 events exceeds, and the node ends
a ``log --follow`` stream when 1,024 events are waiting for it (as happens during a
catch-up, however fast the reader is). So ``control_call`` and ``LogFollower`` speak
the control protocol themselves: they read lines of any length, and the follower
reconnects when its stream ends (the new snapshot has everything so far), so it can
follow a catch-up of tens of thousands of events. The socket is a file in the node's
data directory, reachable from any network namespace.

Nothing here has a deadline of its own: waits are for new events, under the caller's.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tests.lab.procs import ProcessError

CONTROL_SOCKET = "control.sock"
#: Largest control answer ``control_call`` accepts (a 20,000-event log is ~10 MB).
MAX_ANSWER = 512 * 1024 * 1024

Event = dict[str, Any]


class _Lines:
    """Newline-separated JSON objects from a stream, of any length."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._scanned = 0

    async def next(self) -> dict[str, Any] | None:
        """The next object, or None at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                value: dict[str, Any] = json.loads(line)
                return value
            self._scanned = len(self._buffer)
            if len(self._buffer) > MAX_ANSWER:
                raise ProcessError(f"a control answer longer than {MAX_ANSWER} bytes")
            data = await self._stream.receive_some(1 << 20)
            if not data:
                return None
            self._buffer += data


async def _request(data_dir: Path, request: dict[str, Any]) -> tuple[trio.SocketStream, _Lines]:
    stream = await trio.open_unix_socket(os.fspath(data_dir / CONTROL_SOCKET))
    try:
        await stream.send_all(json.dumps(request).encode() + b"\n")
    except BaseException:
        await stream.aclose()
        raise
    return stream, _Lines(stream)


async def control_call(data_dir: Path, op: str, **params: Any) -> Any:
    """One control-socket request; its result (``ProcessError`` if the node refuses).

    Like ``kith OP --json`` without the client's 1 MiB cap on the answer.
    """
    stream, lines = await _request(data_dir, {"op": op, **params})
    async with stream:
        response = await lines.next()
    if response is None:
        raise ProcessError(f"the node closed the control connection during {op!r}")
    if not response.get("ok"):
        raise ProcessError(f"{op!r} failed: {response.get('error')}")
    return response.get("result")


class LogFollower:
    """A group's log as ``log --follow`` shows it: the snapshot, then each new event.

    ``events`` maps event id to its view, in the order first seen. When the node
    ends the stream (the follower fell behind) the follower asks again; when the
    node itself is gone (the socket refuses, or a new stream ends before its
    snapshot) it stops and ``closed`` is set.
    """

    def __init__(self, data_dir: Path, group: str, name: str) -> None:
        self.data_dir = data_dir
        self.group = group
        self.name = name
        self.events: dict[str, Event] = {}
        self.arrived: list[Event] = []  # the same events, in the order first seen
        self.streams = 0  # how many times the log was (re)requested
        self.closed = False
        self._changed = trio.Event()

    def ids(self, kind: str | None = None) -> list[str]:
        return [i for i, e in self.events.items() if kind is None or e["kind"] == kind]

    def count(self, kind: str) -> int:
        return sum(e["kind"] == kind for e in self.events.values())

    async def wait_until(self, predicate: Callable[[dict[str, Event]], bool], what: str) -> None:
        """Wait (under the caller's deadline) until ``predicate(events)`` holds."""
        while not predicate(self.events):
            if self.closed:
                raise ProcessError(f"{self.name}: the log stream ended before {what}")
            await self._changed.wait()

    async def wait_for_ids(self, ids: Sequence[str] | set[str], what: str) -> None:
        wanted = set(ids)
        await self.wait_until(lambda events: wanted <= events.keys(), what)

    async def wait_for_count(self, kind: str, count: int) -> None:
        await self.wait_until(lambda _: self.count(kind) >= count, f"{count} {kind} events")

    async def wait_for_messages(self, wanted: Iterable[tuple[str, str]], what: str) -> None:
        """Wait until a message with each (author peer id, text) in ``wanted`` has come.

        Incremental (each event is looked at once), so it suits logs of any length.
        """
        missing = set(wanted)
        seen = 0
        while True:
            while seen < len(self.arrived):
                event = self.arrived[seen]
                seen += 1
                if event["kind"] == "message":
                    missing.discard((event["author"], event["text"]))
            if not missing:
                return
            if self.closed:
                raise ProcessError(
                    f"{self.name}: the log stream ended before {what} "
                    f"({len(missing)} message(s) missing, e.g. {sorted(missing)[:3]})"
                )
            await self._changed.wait()

    def _add(self, events: list[Event]) -> None:
        for event in events:
            if event["id"] not in self.events:
                self.events[event["id"]] = event
                self.arrived.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow until cancelled or the node is gone; started once the first snapshot is in."""
        started = False
        try:
            while True:
                try:
                    stream, lines = await _request(
                        self.data_dir, {"op": "log", "group": self.group, "follow": True}
                    )
                except (OSError, trio.BrokenResourceError):
                    return  # the node is gone (or going: connected, then dropped)
                async with stream:
                    try:
                        first = await lines.next()
                        if first is None or not first.get("ok"):
                            return
                        self.streams += 1
                        self._add(first["result"])
                        if not started:
                            started = True
                            task_status.started()
                        while (item := await lines.next()) is not None:
                            self._add([item["event"]])
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
        finally:
            self.closed = True
            self._changed.set()
            if not started:
                task_status.started()


@asynccontextmanager
async def following(data_dir: Path, group: str, name: str) -> AsyncIterator[LogFollower]:
    """A ``LogFollower`` for the block, its first snapshot already in."""
    follower = LogFollower(data_dir, group, name)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        if follower.closed:
            raise ProcessError(f"{name}: cannot follow group {group}")
        yield follower
        nursery.cancel_scope.cancel()
