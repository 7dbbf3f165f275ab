"""How fast a node that was away catches up: events per second, store to store.

    kith bench catchup [--events 5000,20000] [--repeat 1] [--size 64] [--tmp DIR] [--out DIR]

Theory of operation
-------------------
One run is one N: two real nodes in this process on 127.0.0.1 (mDNS off,
fresh data directories), the *author* and the *returner*, which dials the
author. The author creates a private (Sender Keys) group, adds the returner,
and sends a warm-up message; once the returner has decrypted it, it holds the
author's sender key, as a member that has been talking does.

Then the returner goes away (``Node.set_offline``: its channel is closed and
it stops dialling, as ``kith demo`` and the partition tests do) and the
author writes N messages of ``--size`` bytes, each one a signed, encrypted
event committed to its SQLite store. The returner comes back; the run is
timed from the moment its channel to the author is up until its store holds
all N events: every one sent by the author from its store, verified,
decrypted and committed by the returner (its frontier for the author reaches
the last seq only once the events are delivered, and delivery writes them in
the same input's transaction). ``events_per_s`` is N over that time;
``events_per_cpu_s`` is N over the process's CPU time meanwhile (what the
rate would be with a core to itself: on a shared machine the wall time also
holds others' work).

Both nodes share this process and one CPU, so the time is the sum of both
sides' work (the author streaming, the returner verifying and storing), not
what the returner would see with a machine to itself. ``cpu_ms_per_event``
is the whole process's CPU over the catch-up; ``bytes_per_event`` is what
both ends' channels wrote during it (events, acknowledgements, vectors).
The periodic vector exchange is pushed past the run (``QUIET_SYNC``): what is
measured is the push on reconnect and the sync on connect.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import trio

from node.api.python import Kith, open_node
from node.bench import report
from node.bench.harness import BenchError, message_text, positive_ints, run_bench
from node.group.events import GroupId
from node.ids import PeerId
from node.service.groups import Group

#: Seconds allowed for starting the nodes, connecting and the warm-up.
SETUP_TIMEOUT = 60.0
#: The author's writing and the catch-up may each take this many seconds per event (plus
#: SETUP_TIMEOUT).
PER_EVENT = 0.02
#: The periodic vector exchange is pushed past the run (see rekey.QUIET_SYNC).
QUIET_SYNC = 3600.0
#: Messages the author writes between checkpoints (lets the nodes' tasks run).
AUTHOR_BATCH = 200


@dataclass(frozen=True, slots=True)
class Params:
    events: tuple[int, ...]
    repeat: int
    size: int
    out: Path
    tmp: Path
    #: cProfile the catch-up (CPU time, both nodes) into this file (the last run's).
    profile: Path | None = None


@dataclass(frozen=True, slots=True)
class Run:
    events: int
    mode: str  # always "private" (Sender Keys): a plot's line
    repeat: int
    #: From the returner's channel up until it has stored the last of the N events.
    catchup_s: float
    events_per_s: float
    #: N over the process's CPU time during the catch-up: the rate with a core to itself,
    #: less sensitive than ``events_per_s`` to others' work on a shared machine.
    events_per_cpu_s: float
    cpu_ms_per_event: float
    bytes_per_event: float
    #: From ``set_offline(False)`` until the channel is up (dial and handshake).
    reconnect_ms: float
    #: The author writing the N events while the returner was away.
    author_events_per_s: float


METRICS = tuple(f.name for f in fields(Run))[3:]


def _group(kith: Kith, group_id: GroupId) -> Group | None:
    return kith.service.groups.get(group_id)


def _has_seq(kith: Kith, group_id: GroupId, author: PeerId, seq: int) -> bool:
    group = _group(kith, group_id)
    return group is not None and group.core.frontier.get(author, 0) >= seq


def _wire_bytes(nodes: Sequence[Kith]) -> int:
    return sum(conn.stream.bytes_sent for k in nodes for conn in k.node.connections.values())


async def run_catchup(n: int, repeat: int, size: int, tmp: Path,
                      profile: Path | None = None) -> Run:
    async with (
        open_node(tmp / "author", name="author", sync_interval=QUIET_SYNC,
                  send_queue=max(128, n + 256)) as author,
        open_node(tmp / "returner", name="returner", peers=[author.listen],
                  sync_interval=QUIET_SYNC, send_queue=max(128, n + 256)) as returner,
    ):
        a, b = author.node.peer_id, returner.node.peer_id
        with trio.move_on_after(SETUP_TIMEOUT) as setup:
            await author.node.wait_until(lambda: b in author.node.connections)
            group = author.service.create("catchup", "private")
            author.service.add(group, b)
            author.service.send(group, "warm-up")
            warm = group.core.frontier[a]
            await returner.service.wait_until(lambda: _has_seq(returner, group.id, a, warm))
        returner_group = _group(returner, group.id)
        if setup.cancelled_caught or returner_group is None:
            raise BenchError(f"N={n}: set-up did not complete within {SETUP_TIMEOUT:g} s")
        if "warm-up" not in returner_group.texts.values():
            raise BenchError(f"N={n}: the returner cannot read the warm-up message")

        returner.node.set_offline(True)
        await author.node.wait_until(lambda: b not in author.node.connections)
        budget = SETUP_TIMEOUT + PER_EVENT * n
        with trio.move_on_after(budget) as writing:
            t0 = time.monotonic()
            for i in range(n):
                author.service.send(group, message_text(i, size))
                if i % AUTHOR_BATCH == AUTHOR_BATCH - 1:
                    await trio.lowlevel.checkpoint()
            target = group.core.frontier[a]
            await author.service.wait_until(lambda: _has_seq(author, group.id, a, target))
            written = time.monotonic() - t0
        if writing.cancelled_caught:
            raise BenchError(f"N={n}: the author did not write {n} events within {budget:g} s")

        with trio.move_on_after(budget) as catching_up:
            back = time.monotonic()
            returner.node.set_offline(False)
            await returner.node.wait_until(lambda: a in returner.node.connections)
            await author.node.wait_until(lambda: b in author.node.connections)
            profiler = cProfile.Profile(time.process_time) if profile else None
            up, cpu0 = time.monotonic(), time.process_time()
            if profiler is not None:
                profiler.enable()
            await returner.service.wait_until(lambda: _has_seq(returner, group.id, a, target))
            done, cpu = time.monotonic(), time.process_time() - cpu0
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            wire = _wire_bytes([author, returner])
        if catching_up.cancelled_caught:
            have = returner_group.core.frontier.get(a, 0) - warm
            raise BenchError(f"N={n}: the returner had {have} of {n} events after {budget:g} s")
        last = message_text(n - 1, size)
        if last not in returner_group.texts.values():
            raise BenchError(f"N={n}: the returner stored the events but cannot read the last")
    seconds = done - up
    return Run(n, "private", repeat, seconds, n / seconds, n / cpu, 1000 * cpu / n, wire / n,
               1000 * (up - back), n / written)


async def run_all(params: Params) -> list[Run]:
    plan = [(r, n) for r in range(params.repeat) for n in params.events]
    progress = report.Progress(len(plan), "catchup")
    runs = []
    for r, n in plan:
        with tempfile.TemporaryDirectory(prefix="kith-catchup-", dir=params.tmp) as tmp:
            run = await run_catchup(n, r, params.size, Path(tmp), params.profile)
        runs.append(run)
        progress.step(f"N={n:<6} run {r + 1}/{params.repeat}: {run.events_per_s:,.0f} events/s "
                      f"({run.catchup_s:.2f} s), {run.cpu_ms_per_event:.3f} ms CPU/event")
    return runs


COLUMNS = (
    report.Column("events_per_s", "events/s", ",.0f", span=True),
    report.Column("events_per_cpu_s", "events/CPU s", ",.0f"),
    report.Column("catchup_s", "catch-up s", ".2f"),
    report.Column("cpu_ms_per_event", "CPU ms/event", ".3f"),
    report.Column("bytes_per_event", "bytes/event", ".0f"),
    report.Column("reconnect_ms", "reconnect ms", ".0f"),
    report.Column("author_events_per_s", "author events/s", ",.0f"),
)

PLOTS = {"events_per_s": "catch-up rate (events/s, store to store)",
         "cpu_ms_per_event": "CPU ms per event caught up (both nodes)"}


def parse_args(argv: Sequence[str], prog: str) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="How fast a member that was away catches up: one node goes offline while "
                    "another writes N messages in a private group, then comes back; events/s "
                    "from reconnect until it has verified and stored all N. Both nodes run in "
                    "this process on 127.0.0.1. Method: docs/research.md.",
        epilog="Writes results.json (summary: events_per_s ...), summary.csv, runs.csv, "
               "table.txt and PNG plots (with matplotlib) to --out.")
    parser.add_argument("--events", type=positive_ints, default=(5000,), metavar="N,N,...",
                        help="events missed and caught up (default 5000)")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="runs per N; the table shows median [min-max] (default 1)")
    parser.add_argument("--size", type=int, default=64, metavar="BYTES",
                        help="message text size (default 64, at least 8)")
    parser.add_argument("--out", type=Path, help="default bench-results/catchup-<timestamp>/")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the data directories go (default: the system temp dir)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="cProfile the catch-up (CPU time) into FILE (pstats format)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.size < 8:
        parser.error("--size must be at least 8")
    out = args.out or Path("bench-results") / f"catchup-{datetime.now():%Y%m%d-%H%M%S}"
    return (Params(args.events, args.repeat, args.size, out, args.tmp, args.profile),
            not args.no_plots)


def main(argv: Sequence[str] | None = None, prog: str = "kith bench catchup") -> int:
    params, plots = parse_args(list(sys.argv[1:] if argv is None else argv), prog)
    started, host = time.monotonic(), report.machine()
    runs = run_bench(run_all, params, prog)
    if runs is None:
        return 1
    rows = [asdict(r) for r in runs]
    summary = report.summarise(rows, ("events", "mode"), METRICS)
    report.publish(params.out, summary=summary, runs=rows, keys=("events", "mode"),
                   columns=COLUMNS,
                   header=f"catchup: median [min-max] of {params.repeat} run(s); "
                          f"{os.cpu_count()} CPU(s); both nodes in one process",
                   params=asdict(params), host=host, plots=None,
                   title="catch-up after being away", seconds=time.monotonic() - started)
    if plots:
        report.plot(params.out, summary, PLOTS, x="events", title="catch-up after being away")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m node.bench.catchup"))
