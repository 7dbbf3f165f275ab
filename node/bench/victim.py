"""The node under attack: one real ``kith run`` process, its log and its memory.

Theory of operation: ``victim(tmp)`` starts ``python -m node --data DIR run``
listening on 127.0.0.1 with a free port and mDNS off, for the duration of an
``async with`` block, and reads its stderr (where it logs) into ``Victim.lines``
so that the pipe never fills and waits can be on log lines, never on a timer.
Memory is read from ``/proc/PID/status``: ``VmRSS`` now, and ``VmHWM`` (the
peak since the last ``reset_peak``, which writes 5 to ``/proc/PID/clear_refs``;
where that is refused, a 10 ms sampler in ``PeakMeter`` is all there is). The
control socket is spoken with the CLI's own client, in a thread.

On leaving the block the process gets SIGTERM, and SIGKILL if it has not
exited within ``STOP_TIMEOUT`` seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.api import client
from node.bench.harness import BenchError
from node.datadir import DataDir

#: Seconds the victim gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Seconds to wait for a log line or a control answer.
WAIT_TIMEOUT = 30.0
LISTENING = r"node (?P<short>[a-z2-7]{8}) \((?P<name>[^)]*)\) listening on (?P<address>\S+)$"
MiB = 1024 * 1024


class VictimError(BenchError):
    """The victim did not do what the benchmark waited for (the message has its log)."""


class Victim:
    """A running ``kith run`` process: its log lines, memory and control socket."""

    def __init__(self, process: trio.Process, data: Path) -> None:
        self.process = process
        self.data = DataDir(data)
        self.lines: list[str] = []
        self.address = ""
        self.short = ""
        self._changed = trio.Event()
        self._closed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host, int(port)

    def status(self, field: str) -> int:
        """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise VictimError(f"no {field} in /proc/{self.pid}/status")

    def rss(self) -> int:
        return self.status("VmRSS")

    def reset_peak(self) -> bool:
        """Restart ``VmHWM`` from the current RSS; False if the kernel refuses."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return True

    def mark(self) -> int:
        """Where the log is now: pass as ``after`` to look only at later lines."""
        return len(self.lines)

    def count(self, pattern: str, *, after: int = 0) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines[after:] if regex.search(line))

    async def wait_until(self, done: Callable[[], bool], what: str) -> None:
        """Wait (re-checking after each new log line) until ``done()``."""
        with trio.move_on_after(WAIT_TIMEOUT):
            while not done():
                if self._closed:
                    raise self.error(f"exited (status {self.process.returncode}) before {what}")
                await self._changed.wait()
            return
        raise self.error(f"did not log {what} within {WAIT_TIMEOUT:g} s")

    async def wait_for_line(self, pattern: str, *, after: int = 0, count: int = 1) -> None:
        await self.wait_until(lambda: self.count(pattern, after=after) >= count,
                              f"{count} line(s) matching {pattern!r}")

    async def call(self, op: str, **params: Any) -> Any:
        """One control-socket request (as the ``kith`` CLI makes it); its result."""
        with trio.fail_after(WAIT_TIMEOUT):
            return await trio.to_thread.run_sync(
                partial(client.call, self.data.control_socket, op, **params))

    def error(self, what: str) -> VictimError:
        tail = "\n".join(self.lines[-40:])
        return VictimError(f"the node under attack {what}; the end of its log:\n{tail}")

    async def _read(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        try:
            async with stream:
                while data := await stream.receive_some(1 << 16):
                    *complete, pending = (pending + data).split(b"\n")
                    self.lines.extend(line.decode("utf-8", "replace") for line in complete)
                    if complete:
                        self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._closed = True
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def victim(data: Path, *extra: str) -> AsyncIterator[Victim]:
    """Run ``kith --data DATA run`` on 127.0.0.1:0 without mDNS for the block."""
    command = [sys.executable, "-m", "node", "--data", os.fspath(data), "run",
               "--listen", "127.0.0.1:0", "--no-mdns", "--name", "victim", *extra]
    env = {k: v for k, v in os.environ.items() if k != "KITH_DATA"} | {"PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env)
    node = Victim(process, data)
    assert process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._read, process.stderr)
            try:
                await node.wait_for_line(LISTENING)
                match = next(m for line in node.lines if (m := re.search(LISTENING, line)))
                node.address, node.short = match["address"], match["short"]
                yield node
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process)
    finally:
        if process.returncode is None:
            process.kill()


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
            return
        process.kill()
    await process.wait()


class PeakMeter:
    """The victim's peak RSS while ``run`` runs: ``VmHWM`` (reset at the start) and a
    10 ms sample of ``VmRSS``, whichever is higher."""

    def __init__(self, node: Victim) -> None:
        self.node = node
        self.exact = node.reset_peak()
        self.peak = node.rss()

    async def run(self) -> None:
        while self.node.alive:
            self.sample()
            await trio.sleep(0.01)

    def sample(self) -> int:
        try:
            now = self.node.status("VmHWM") if self.exact else 0
            self.peak = max(self.peak, now, self.node.rss())
        except (OSError, VictimError):  # the process is gone
            pass
        return self.peak
