"""The fanout benchmarks' shared harness: parameters and results, receiver processes,
message texts, memory sampling and percentiles.

``fanout.py`` (Kith and raw TCP) and ``floodsub.py`` (py-libp2p, the comparison)
measure the same thing the same way: one author in this process, N receivers in
``--receiver-procs`` child processes that report JSON lines on stdout (``up``,
``ready``, ``done`` with arrival times). Everything both need is here, so neither
imports the other for it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import trio

from node.errors import KithError

P = TypeVar("P")
T = TypeVar("T")

#: Seconds allowed for starting receivers, connecting and the warm-up.
SETUP_TIMEOUT = 60.0
#: The timed phase may take SETUP_TIMEOUT plus this many seconds per message per member.
PER_DELIVERY = 0.02
#: Seconds receiver processes get to exit once their stdin is closed.
STOP_TIMEOUT = 5.0
#: The set-up is over once the author's channels have carried nothing for this long.
QUIET = 0.2


class BenchError(KithError):
    """A run could not be completed (a receiver failed or timed out)."""


@dataclass(frozen=True, slots=True)
class Params:
    members: tuple[int, ...]
    modes: tuple[str, ...]
    messages: int
    size: int
    repeat: int
    receiver_procs: int
    out: Path
    tmp: Path  # where the data directories go (its filesystem decides what fsync costs)


@dataclass(frozen=True, slots=True)
class Run:
    """One measured (N, mode) run."""

    members: int
    mode: str
    repeat: int
    seconds: float
    messages_per_s: float
    cpu_ms_per_message: float
    encryptions_per_message: float
    signatures_per_message: float
    bytes_per_message: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float = math.nan
    #: Bytes the author's TCP connections carried per message (channel records, acks
    #: not included: those are received).
    wire_bytes_per_message: float = math.nan
    #: Every member has the message: ``members x messages_per_s``.
    deliveries_per_s: float = math.nan
    #: Peak resident memory of the author's process during the run (sampled).
    peak_rss_mb: float = math.nan
    #: Largest peak resident memory of one receiver process.
    receiver_rss_mb: float = math.nan


#: What a run measured (every field of ``Run`` after members, mode and repeat).
METRICS = tuple(f.name for f in fields(Run))[3:]


def bench_error(exc: BaseException) -> BenchError | None:
    """The BenchError inside (nested) exception groups: trio's nurseries wrap it."""
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := bench_error(inner)) is not None:
                return found
    return None


def run_bench(run: Callable[[P], Awaitable[T]], params: P, prog: str) -> T | None:
    """``trio.run(run, params)``; None (after one ``prog: reason`` line on stderr) when it
    fails with a BenchError, however deep in nurseries' exception groups."""
    try:
        return trio.run(run, params)
    except (BenchError, BaseExceptionGroup) as exc:
        error = bench_error(exc)
        if error is None:
            raise
        print(f"{prog}: {error}", file=sys.stderr)
        return None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now (``/proc/self/statm``; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return math.nan
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """The peak of ``rss_mb()`` while ``run`` runs (every 20 ms; ru_maxrss cannot be
    reset between runs of one process)."""

    def __init__(self) -> None:
        self.peak = rss_mb()

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await trio.sleep(0.02)


def message_text(index: int, size: int) -> str:
    """Message ``index`` as exactly ``size`` ASCII characters (the index leads)."""
    return f"{index:06d}:".ljust(size, "x")


def message_index(text: str) -> int:
    return int(text.split(":", 1)[0])


def queue_size(messages: int) -> int:
    """``send_queue`` for every node: the whole burst plus set-up events and acks."""
    return max(128, messages + 256)


def positive_ints(text: str) -> tuple[int, ...]:
    """``--members 2,8,32``: a comma-separated list of positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of positive integers")
    return values


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 1]."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def quiet(streams: Sequence[Any], seconds: float = QUIET) -> None:
    """Until ``streams`` (anything with ``bytes_sent`` and ``bytes_received``) have carried
    nothing for ``seconds``. The set-up's last vector exchanges (members answering what
    the warm-up told them) must be over before a run is timed: a member whose vector
    crosses the first timed messages is streamed them at once, which is neither fanout
    mode's cost."""
    def total() -> int:
        return sum(s.bytes_sent + s.bytes_received for s in streams)

    while True:
        before = total()
        await trio.sleep(seconds)
        if total() == before:
            return


# -- in a receiver process ------------------------------------------------------------------


def emit(**fields: Any) -> None:
    """One JSON line to the parent (stdout is a pipe it reads)."""
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def until_stdin_closed() -> None:
    """Return when the parent closes our stdin (its way of saying stop)."""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while await stdin.receive_some():
            pass


# -- the parent's side of the receivers -----------------------------------------------------


def split(n: int, procs: int) -> list[tuple[int, int]]:
    """(first, count) of the receiver nodes each process hosts: ``n`` spread over ``procs``."""
    procs = max(1, min(n, procs))
    sizes = [n // procs + (i < n % procs) for i in range(procs)]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]


class Receivers:
    """The JSON lines written by one run's receiver processes, in arrival order."""

    def __init__(self, lines: trio.MemoryReceiveChannel[dict[str, Any]], logs: list[Path]):
        self._lines = lines
        self._logs = logs
        self._progress = ""

    async def expect(self, key: str, count: int) -> list[dict[str, Any]]:
        """The next ``count`` lines, each of which must carry ``key``."""
        got: list[dict[str, Any]] = []
        while len(got) < count:
            self._progress = f"only {len(got)} of {count} receivers said {key!r}"
            line = await self._lines.receive()
            if key not in line:
                raise BenchError(f"waiting for {key!r}, a receiver said {line}{self._tail()}")
            got.append(line)
        self._progress = ""
        return got

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Fail with ``BenchError`` (and the receivers' stderr) unless the block ends in time."""
        try:
            with trio.fail_after(seconds):
                yield
        except trio.TooSlowError:
            what = self._progress or "the author was not done"
            raise BenchError(f"{what} within {seconds:g} s{self._tail()}") from None

    def _tail(self) -> str:
        text = "".join(p.read_text(errors="replace")[-2000:] for p in self._logs if p.exists())
        return f"; receiver stderr:\n{text}" if text.strip() else ""


@asynccontextmanager
async def receiver_processes(
    n: int, procs: int, logs: Path, log_name: str, command: Callable[[int, int], list[str]]
) -> AsyncIterator[Receivers]:
    """Start processes hosting ``n`` receivers: ``python -m`` plus ``command(first, count)``
    for each share of ``split(n, procs)``, stderr in ``logs/log_name-INDEX.log``. On exit
    they are stopped (stdin closed, then killed after ``STOP_TIMEOUT``)."""
    send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
    processes: list[trio.Process] = []
    log_paths: list[Path] = []
    async with trio.open_nursery() as nursery:
        try:
            for index, (first, count) in enumerate(split(n, procs)):
                log_paths.append(logs / f"{log_name}-{index}.log")
                with log_paths[-1].open("wb") as err:
                    proc = await trio.lowlevel.open_process(
                        [sys.executable, "-m", *command(first, count)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
                processes.append(proc)
                nursery.start_soon(_read_lines, proc, index, send.clone())
            send.close()
            yield Receivers(receive, log_paths)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(processes)


async def _read_lines(
    proc: trio.Process, index: int, out: trio.MemorySendChannel[dict[str, Any]]
) -> None:
    assert proc.stdout is not None
    pending = b""
    async with out:
        while data := await proc.stdout.receive_some():
            *complete, pending = (pending + data).split(b"\n")
            for line in complete:
                try:
                    out.send_nowait(json.loads(line))
                except ValueError:
                    out.send_nowait({"stdout": line.decode(errors="replace")})
        await proc.wait()
        out.send_nowait({"exit": index, "status": proc.returncode})


async def _stop(processes: list[trio.Process]) -> None:
    for proc in processes:
        if proc.stdin is not None:
            await proc.stdin.aclose()
    with trio.move_on_after(STOP_TIMEOUT):
        for proc in processes:
            await proc.wait()
    for proc in processes:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
