"""The parent's side of ``kith bench scale``: the host processes and their answers.

``Hosts.start(n, procs, data)`` starts ``node.bench.scale_host`` processes
hosting nodes 0 .. n-1 (``harness.split``); ``started()`` waits for every
node's ``up`` line; ``call(op, ...)`` sends one command to every host (or, with
``to``, to the host of that node) and returns their answers, raising
``BenchError`` for an ``error`` answer or a host that exits. On exit every host
is stopped (stdin closed, killed after ``STOP_TIMEOUT``).
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

from node.bench.harness import STOP_TIMEOUT, BenchError, split


class Hosts:
    def __init__(self, n: int, processes: list[trio.Process], shares: list[tuple[int, int]],
                 logs: list[Path]) -> None:
        self.n = n
        self.count = len(processes)
        self._processes = processes
        self._host_of = {i: k for k, (first, size) in enumerate(shares)
                         for i in range(first, first + size)}
        self._logs = logs
        self._ids = itertools.count()
        self._answers: dict[int, list[dict[str, Any]]] = {}
        self._arrived = trio.Event()
        self._ups: dict[int, tuple[str, str]] = {}
        self._failed: str | None = None
        self._stopping = False

    @classmethod
    @asynccontextmanager
    async def start(cls, n: int, procs: int, data: Path) -> AsyncIterator[Hosts]:
        shares = split(n, procs)
        processes: list[trio.Process] = []
        logs = [data / f"host-{k}.log" for k in range(len(shares))]
        async with trio.open_nursery() as nursery:
            try:
                for (first, size), log in zip(shares, logs, strict=True):
                    with log.open("wb") as err:
                        processes.append(await trio.lowlevel.open_process(
                            [sys.executable, "-m", "node.bench.scale_host", str(first),
                             str(size), str(data)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err))
                hosts = cls(n, processes, shares, logs)
                for k, proc in enumerate(processes):
                    nursery.start_soon(hosts._read, k, proc)
                yield hosts
            finally:
                hosts._stopping = True
                with trio.CancelScope(shield=True):
                    await _stop(processes)
                nursery.cancel_scope.cancel()

    async def started(self) -> dict[int, tuple[str, str]]:
        """Every node's (listen address, peer id), once all are up."""
        while len(self._ups) < self.n:
            await self._wait()
        return dict(self._ups)

    async def call(self, op: str, *, to: int | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Send ``op`` to every host (``to``: the host of that node); their answers."""
        ident = next(self._ids)
        self._answers[ident] = []
        line = (json.dumps({"id": ident, "op": op, **fields}) + "\n").encode()
        targets = [self._processes[self._host_of[to]]] if to is not None else self._processes
        for proc in targets:
            assert proc.stdin is not None
            await proc.stdin.send_all(line)
        while len(self._answers[ident]) < len(targets):
            await self._wait()
        answers = self._answers.pop(ident)
        errors = [a["error"] for a in answers if "error" in a]
        if errors:
            raise BenchError(f"{op}: {errors[0]}{self._tail()}")
        return answers

    @contextmanager
    def within(self, seconds: float, what: str) -> Iterator[None]:
        """Fail with ``BenchError`` (and the hosts' stderr) unless the block ends in time."""
        try:
            with trio.fail_after(seconds):
                yield
        except trio.TooSlowError:
            raise BenchError(f"{what} did not complete within {seconds:g} s"
                             f"{self._tail()}") from None

    async def _wait(self) -> None:
        if self._failed is not None:
            raise BenchError(self._failed + self._tail())
        await self._arrived.wait()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def _read(self, k: int, proc: trio.Process) -> None:
        assert proc.stdout is not None
        pending = b""
        while data := await proc.stdout.receive_some():
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "up" in message:
                    self._ups[message["up"]] = (message["listen"], message["peer"])
                elif message.get("id") in self._answers:
                    self._answers[message["id"]].append(message)
            self._wake()
        await proc.wait()
        if not self._stopping:
            self._failed = f"host {k} exited with status {proc.returncode}"
            self._wake()

    def _tail(self) -> str:
        text = "".join(p.read_text(errors="replace")[-2000:] for p in self._logs if p.exists())
        return f"; host stderr:\n{text}" if text.strip() else ""


async def _stop(processes: list[trio.Process]) -> None:
    for proc in processes:
        if proc.stdin is not None:
            with trio.move_on_after(1):
                await proc.stdin.aclose()
    with trio.move_on_after(STOP_TIMEOUT + math.log2(len(processes) + 1)):
        for proc in processes:
            await proc.wait()
    for proc in processes:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
