"""Kith nodes inside a ``NetnsLab``: run, kill, pause and restart them, and read their logs.

Theory of operation: ``lab_node`` is ``procs.kith_process`` run through ``ip netns
exec`` (which execs the command, so the process we hold *is* the node: SIGKILL and
SIGSTOP reach it directly). Everything else talks to a node from the root namespace,
through the control socket in its data directory (a file, reachable from any
namespace):

* ``kith`` / ``kith_json`` run one CLI command (bounded only against a hang).
* ``control_call`` and ``LogFollower`` speak the control protocol themselves. The
  ``kith`` client refuses answers over 1 MiB (``protocol.MAX_LINE``), which a log of
  about 2,000 events exceeds, and the node ends a ``log --follow`` stream when 1,024
  events are waiting for it (as happens during a catch-up, however fast the reader
  is); the follower reads lines of any length and
  reconnects (the new snapshot has everything so far), so it can follow a catch-up of
  tens of thousands of events.
* ``partitioned`` cuts the lab in halves with blackhole routes inside the namespaces:
  packets between the halves vanish silently, as on a real broken link, so open
  channels end only by the nodes' own liveness checks.
* ``DirectoryWatch`` (inotify) wakes a test when a node writes to its data directory:
  the one outside sign of progress while a node is busy inside one long request.

Nothing here sleeps: every wait is for a line, an event or a file change, under a
deadline the caller holds (``deadline`` turns it into a failure carrying the logs).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.group.bodies import PrivateMessage, decode_body
from node.group.events import Kind, decode_event
from node.testing.netns import NetnsLab
from node.testing.procs import KithProcess, KithProcessError, kith_command, kith_env

#: Every lab node listens on this port of its own address (fixed, so a restarted node
#: is found again where its peers keep redialling it).
PORT = 7373
CONTROL_SOCKET = "control.sock"
DATABASE = "kith.db"
#: Largest control answer ``control_call`` accepts (a 20,000-event log is ~10 MB).
MAX_ANSWER = 512 * 1024 * 1024
#: Longest a CLI command may run: more than the client's own 120 s wait for an answer.
CLI_LIMIT = 180.0

Event = dict[str, Any]


# -- nodes ----------------------------------------------------------------------------


class LabNode(KithProcess):
    """``kith run`` inside one lab host."""

    def __init__(self, process: trio.Process, command: list[str], index: int, name: str) -> None:
        super().__init__(process, command)
        self.index = index
        self.name = name

    def mark(self) -> int:
        """Where the log is now: pass as ``after`` to wait only for later lines."""
        return len(self.lines)

    async def wait_for(self, pattern: str, *, after: int = 0) -> re.Match[str]:
        """Like ``wait_for_line`` but without its 10 s limit: the caller holds a deadline."""
        regex = re.compile(pattern)
        index = after
        while True:
            while index < len(self.lines):
                match = regex.search(self.lines[index])
                index += 1
                if match:
                    return match
            if self._stderr_closed:
                await self.process.wait()
                raise self._error(
                    f"exited (status {self.returncode}) before a line matched {regex.pattern!r}"
                )
            await self._changed.wait()

    def lines_matching(self, pattern: str, *, after: int = 0) -> list[str]:
        return [line for line in self.lines[after:] if re.search(pattern, line)]


def run_args(
    lab: NetnsLab, index: int, name: str, dial: Sequence[int] = (), port: int = PORT
) -> list[str]:
    """``run`` arguments: listen on host ``index``'s lab address, dial hosts ``dial``.

    mDNS is off: peers come from ``--peer`` only, which keeps who dials whom (and
    so the connection log) deterministic.
    """
    args = ["run", "--listen", f"{lab.host(index).address}:{port}", "--no-mdns",
            "--name", name]
    for other in dial:
        args += ["--peer", f"{lab.host(other).address}:{port}"]
    return args


@asynccontextmanager
async def lab_node(
    lab: NetnsLab, index: int, name: str, data_dir: Path, args: Sequence[str]
) -> AsyncIterator[LabNode]:
    """Run ``kith --data DATA_DIR ARGS...`` inside host ``index`` for the block.

    On leaving the block the node gets SIGCONT (in case the test paused it), SIGTERM,
    and SIGKILL if it has not exited within ``procs.STOP_TIMEOUT`` seconds.
    """
    command = lab.exec_argv(index, kith_command(data_dir, *args))
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=kith_env(),
    )
    node = LabNode(process, command, index, name)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._read_stderr)
            nursery.start_soon(node._read_stdout)
            try:
                yield node
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.send_signal(signal.SIGCONT)  # a stopped node cannot stop
                    await node.stop()
    except BaseExceptionGroup as group:
        # The readers never raise, so a group holds what the block raised: pass that on.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if process.returncode is None:  # only if stop() itself was interrupted
            process.kill()


@contextmanager
def deadline(seconds: float, what: str, nodes: Sequence[LabNode]) -> Iterator[None]:
    """``trio.fail_after(seconds)``; on expiry an ``AssertionError`` with every node's log."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        logs = "\n".join(f"--- {node.name}:\n{node.log}" for node in nodes)
        raise AssertionError(f"{what}: not within {seconds:g} s\n{logs}") from None


# -- the CLI --------------------------------------------------------------------------


async def kith(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run one ``kith --data DATA_DIR ARGS...`` (root namespace) to completion.

    A non-zero exit status is not an error here. ``CLI_LIMIT`` only stops a hang:
    callers hold the deadlines that matter.
    """
    with trio.fail_after(CLI_LIMIT):
        return await trio.run_process(
            kith_command(data_dir, *args),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=kith_env(),
        )


async def kith_json(data_dir: Path, *args: str) -> Any:
    """``kith ARGS... --json``, which must succeed; its parsed output."""
    result = await kith(data_dir, *args, "--json")
    if result.returncode != 0:
        raise KithProcessError(
            f"kith {' '.join(args)} --json exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return json.loads(result.stdout)


# -- the control protocol -------------------------------------------------------------


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
                raise KithProcessError(f"a control answer longer than {MAX_ANSWER} bytes")
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
    """One control-socket request; its result (``KithProcessError`` if the node refuses).

    Like ``kith OP --json`` without the client's 1 MiB cap on the answer.
    """
    stream, lines = await _request(data_dir, {"op": op, **params})
    async with stream:
        response = await lines.next()
    if response is None:
        raise KithProcessError(f"the node closed the control connection during {op!r}")
    if not response.get("ok"):
        raise KithProcessError(f"{op!r} failed: {response.get('error')}")
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
                raise KithProcessError(f"{self.name}: the log stream ended before {what}")
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
                raise KithProcessError(
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
            raise KithProcessError(f"{name}: cannot follow group {group}")
        yield follower
        nursery.cancel_scope.cancel()


# -- partitions -----------------------------------------------------------------------


async def _ip(netns: str, *args: str) -> None:
    await trio.run_process(["ip", "-n", netns, *args], capture_stdout=True,
                           capture_stderr=True, check=True)


@asynccontextmanager
async def partitioned(lab: NetnsLab, *sides: Sequence[int]) -> AsyncIterator[None]:
    """Hosts in different ``sides`` cannot reach each other during the block.

    Each host gets a blackhole route for every address on another side: packets
    vanish without an error on the wire, as when a link breaks. New connections
    fail at once (the route refuses them locally); open ones just go quiet. The
    routes go when the block ends (the lab's removal would drop them too).
    """
    routes = [
        (lab.host(i).netns, f"{lab.host(j).address}/32")
        for side in sides for i in side
        for other in sides if other is not side for j in other
    ]
    added: list[tuple[str, str]] = []
    try:
        for netns, prefix in routes:
            await _ip(netns, "route", "add", "blackhole", prefix)
            added.append((netns, prefix))
        yield
    finally:
        with trio.CancelScope(shield=True):
            for netns, prefix in added:
                await _ip(netns, "route", "del", "blackhole", prefix)


# -- the database ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of a node's ``events`` table, decoded."""

    id: str  # hex
    author: bytes
    seq: int
    epoch: int
    kind: Kind
    index: int | None  # a private MESSAGE's sender-chain index


def stored_events(data_dir: Path) -> list[StoredEvent]:
    """Every event a node has stored, in storage order, read from a copy of its database.

    The copy (with its WAL) is taken as the files are now, so it also works on the
    files of a node killed mid-write, and the node's own files are left untouched
    for its restart to recover.
    """
    with tempfile.TemporaryDirectory(prefix="kith-db-") as scratch:
        for suffix in ("", "-wal", "-shm"):
            source = data_dir / f"{DATABASE}{suffix}"
            if source.exists():
                shutil.copyfile(source, Path(scratch) / f"{DATABASE}{suffix}")
        conn = sqlite3.connect(Path(scratch) / DATABASE)
        try:
            rows = conn.execute("SELECT raw FROM events ORDER BY pos").fetchall()
        finally:
            conn.close()
    out = []
    for (raw,) in rows:
        event = decode_event(raw)
        index = None
        if event.kind is Kind.MESSAGE:
            body = decode_body(Kind.MESSAGE, event.body, mode="private")
            if isinstance(body, PrivateMessage):
                index = body.index
        out.append(StoredEvent(event.id.hex(), bytes(event.author), event.seq, event.epoch,
                               event.kind, index))
    return out


def count_messages(data_dir: Path, author: bytes) -> int:
    """How many MESSAGE events by ``author`` a running node has committed (read-only)."""
    uri = f"file:{data_dir / DATABASE}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM events WHERE author = ? AND kind = ?",
                           (author, int(Kind.MESSAGE))).fetchone()
    finally:
        conn.close()
    return int(row[0])


# -- watching a directory -------------------------------------------------------------

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100


class DirectoryWatch:
    """inotify on one directory: ``await changed()`` returns once a file in it was written.

    Changes between two calls are not lost: they leave the descriptor readable.
    """

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        watch = libc.inotify_add_watch(self._fd, os.fsencode(directory), _IN_MODIFY | _IN_CREATE)
        if watch < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, f"cannot watch {directory}")

    async def changed(self) -> None:
        await trio.lowlevel.wait_readable(self._fd)
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        trio.lowlevel.notify_closing(self._fd)
        os.close(self._fd)

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
