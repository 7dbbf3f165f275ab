"""A private group of N real nodes under churn and a partition: does it converge, and
what does it cost, busy and idle?

    kith bench scale [--members 8,16] [--procs 4] [--idle-seconds 30] [--out DIR]

Theory of operation
-------------------
One run is one N: N real nodes spread over ``--procs`` processes
(``node.bench.scale_host``: several nodes in one trio loop each, so 100 nodes
fit on 2 cores), each node with its own data directory, its own loopback
address (127.77.x.y) and the default timers, mDNS off, every node connected
to every other (a full mesh, as the members of a real group are). Node 0
creates a private (Sender Keys) group with the first N - J nodes (J = N/8,
at least 1: the *joiners* stay out) and every member sends a warm-up
message; once everyone reads every warm-up, the measured part starts:

1. **join**: node 0 adds the J joiners while every member sends a round of
   messages (``--per-round`` each);
2. **removal**: once everyone has the joiners, node 0 removes K = N/8 (at
   least 1) of the first members while the others, joiners included, send;
3. **partition**: once the removal is applied everywhere, the nodes are cut
   into two halves (every channel across the cut closed, nobody dialling
   across it: ``scale_host``); both halves send for ``--partition-seconds``;
4. **heal**: the cut ends, the links redial, everyone sends once more.

The run then polls every node until the group has **converged**: every
member (not the removed) holds the same events in the same order and the same
membership, reads every message it is entitled to (a member, the first ones
everything from round 1, a joiner everything from round 2 on), and no removed
node reads anything sent after its removal (rounds 3 and 4).
``convergence_s`` is the time from the heal until then (``--timeout`` caps
it: converged is then false). Bytes (what every channel sent: events,
acknowledgements, vectors, keepalives) and CPU (every host process) are
counted from the start of round 1 until convergence and divided by the
messages of rounds 1-4.

Then nothing is sent for ``--idle-seconds``: ``idle_cpu_percent`` is the CPU
the host processes used meanwhile, in percent of one core (keepalives and the
periodic vector exchange of the whole group), ``rss_mb_per_node`` the hosts'
resident memory over N (each process's interpreter shared by its nodes). The
window starts ``--idle-after`` seconds after convergence (default 0: the tail of
the traffic, receipts and syncs, is in it); keepalives come once a minute on a
quiet channel, so a window of 60 s or more, after the tail, is the steady state.
With ``--profile-idle`` every host then runs cProfile (CPU time) through a
second quiet of up to ``PROFILE_SECONDS`` and the heaviest functions go into
``results.json`` (``idle_profile``).
"""

from __future__ import annotations

import argparse
import math
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any

import trio

from node.bench import report
from node.bench.harness import BenchError, positive_ints, run_bench
from node.bench.scale_host import text
from node.bench.scale_hosts import Hosts

#: Seconds allowed for starting, connecting and the warm-up: this plus this per channel
#: (N^2 / 2 handshakes, and every member's first sender key goes to every other).
SETUP = 60.0
SETUP_PER_CHANNEL = 0.1
#: Seconds allowed for each membership change to reach everyone: SETUP plus this per
#: channel (at N = 64 on this machine a phase took 50-80 s).
PHASE_PER_CHANNEL = 0.05
#: How often the nodes' states are compared while waiting for convergence.
POLL = 0.25
#: How many functions the idle profile keeps (the heaviest, by own time), and how long
#: it runs (a second quiet, after the measured one).
PROFILE_TOP = 20
PROFILE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Params:
    members: tuple[int, ...]
    procs: int
    per_round: int
    size: int
    partition_seconds: float
    idle_seconds: float
    timeout: float
    idle_after: float
    profile_idle: bool
    out: Path
    tmp: Path


@dataclass(frozen=True, slots=True)
class Run:
    members: int
    converged: bool
    repeat: int
    convergence_s: float
    messages: float
    events: float
    bytes_per_message: float
    cpu_ms_per_message: float
    idle_cpu_percent: float
    idle_bytes_per_s: float
    rss_mb_per_node: float
    setup_s: float


METRICS = tuple(f.name for f in fields(Run))[3:]


@dataclass(frozen=True, slots=True)
class Cast:
    """Who is who in a run of N."""

    n: int

    @property
    def joiners(self) -> list[int]:
        return list(range(self.n - max(1, self.n // 8), self.n))

    @property
    def first(self) -> list[int]:
        return list(range(self.n - len(self.joiners)))

    @property
    def removed(self) -> list[int]:
        return self.first[-max(1, self.n // 8):]

    @property
    def stable(self) -> list[int]:
        return [i for i in self.first if i not in self.removed]

    @property
    def remaining(self) -> list[int]:
        return self.stable + self.joiners

    @property
    def sides(self) -> dict[str, int]:
        return {str(i): int(i >= self.n // 2) for i in range(self.n)}


def _texts(label: str, nodes: Sequence[int], params: Params) -> set[str]:
    return {text(label, i, k, params.size) for i in nodes for k in range(params.per_round)}


def _expectations(cast: Cast, params: Params) -> tuple[dict[str, list[str]],
                                                       dict[str, list[str]]]:
    rounds = {"r1": _texts("r1", cast.first, params),
              "r2": _texts("r2", cast.remaining, params),
              "r3": _texts("r3", cast.remaining, params),
              "r4": _texts("r4", cast.remaining, params)}
    later = sorted(rounds["r3"] | rounds["r4"])
    read = {str(i): sorted(set().union(*rounds.values())) for i in cast.stable}
    read |= {str(i): sorted(rounds["r2"] | rounds["r3"] | rounds["r4"]) for i in cast.joiners}
    unread = {str(i): later for i in cast.removed}
    return read, unread


def _converged(states: dict[int, dict[str, Any]], cast: Cast) -> bool:
    members = [states[i] for i in cast.remaining]
    return (len({(s["events"], s["members"]) for s in members}) == 1
            and all(s["missing"] == 0 for s in members)
            and all(s["forbidden"] == 0 for s in states.values()))


async def _states(hosts: Hosts) -> dict[int, dict[str, Any]]:
    states: dict[int, dict[str, Any]] = {}
    for answer in await hosts.call("state"):
        states |= {int(i): s for i, s in answer["states"].items()}
    return states


async def _check_partition(hosts: Hosts, cast: Cast) -> None:
    """The cut held: no channel crosses it, and each half has what the other lacks (every
    author holds its own round-3 messages as soon as it has sent them)."""
    crossing = sum(a["crossing"] for a in await hosts.call("crossing"))
    states = await _states(hosts)
    halves = [{states[i]["events"] for i in cast.remaining if cast.sides[str(i)] == side}
              for side in (0, 1)]
    if crossing or halves[0] & halves[1]:
        raise BenchError(f"the partition leaked: {crossing} channel(s) across the cut, "
                         f"{len(halves[0] & halves[1])} state(s) on both sides")


def _why(states: dict[int, dict[str, Any]], cast: Cast) -> str:
    """What differs between the members' states (for a run that did not converge)."""
    members = {i: states[i] for i in cast.remaining}
    kinds: dict[tuple[str, str], list[int]] = {}
    for i, s in members.items():
        kinds.setdefault((s["events"], s["members"]), []).append(i)
    counts = sorted({s["count"] for s in members.values()})
    missing = {i: (s["missing"], s.get("missing_sample", []))
               for i, s in members.items() if s["missing"]}
    forbidden = {i: s["forbidden"] for i, s in states.items() if s["forbidden"]}
    groups = sorted(kinds.values(), key=len, reverse=True)
    return (f"{len(kinds)} distinct states among {len(members)} members (sizes "
            f"{[len(g) for g in groups][:8]}, the smaller ones: {groups[1:4]}); event counts "
            f"{counts[:6]}; members missing messages they may read: {missing or 'none'}; "
            f"nodes reading what they may not: {forbidden or 'none'}")


def _say(n: int, started: float, text: str) -> None:
    sys.stderr.write(f"  N={n} +{time.monotonic() - started:.0f} s: {text}\n")


def _totals(stats: list[dict[str, Any]]) -> tuple[float, float, float]:
    return (sum(s["cpu"] for s in stats), sum(s["bytes"] for s in stats),
            sum(s["rss_mb"] for s in stats))


async def run_scale(n: int, repeat: int, params: Params,
                    tmp: Path) -> tuple[Run, list[str], str]:
    """One run of N; also the idle profile's lines and, unless it converged, what differed."""
    cast = Cast(n)
    peer_of: dict[int, str] = {}
    started = time.monotonic()
    async with Hosts.start(n, params.procs, tmp) as hosts:
        with hosts.within(SETUP + SETUP_PER_CHANNEL * n * (n - 1) / 2, "set-up"):
            ups = await hosts.started()
            peer_of = {i: peer for i, (_, peer) in ups.items()}
            await hosts.call("peers", peers={str(i): [listen, peer]
                                             for i, (listen, peer) in ups.items()})
            await hosts.call("connected")
            _say(n, started, f"{n * (n - 1) // 2} channels up")
            group = (await hosts.call("create", node=0, to=0))[0]["group"]
            await hosts.call("group", group=group)
            await hosts.call("add", node=0, peers=[peer_of[i] for i in cast.first[1:]], to=0)
            await hosts.call("members", nodes=cast.first,
                             members=[peer_of[i] for i in cast.first])
            await hosts.call("send", nodes=cast.first, label="warm", count=1, size=params.size)
            await hosts.call("read", nodes=cast.first,
                             texts=sorted(text("warm", i, 0, params.size) for i in cast.first))
        setup_s = time.monotonic() - started
        _say(n, started, "set-up done: everyone reads every warm-up")
        read, unread = _expectations(cast, params)
        await hosts.call("expect", read=read, unread=unread)
        stats0 = _totals(await hosts.call("stats"))
        send = {"count": params.per_round, "size": params.size}
        with hosts.within(SETUP + PHASE_PER_CHANNEL * n * (n - 1) / 2, "the join"):
            await hosts.call("add", node=0, peers=[peer_of[i] for i in cast.joiners], to=0)
            await hosts.call("send", nodes=cast.first, label="r1", **send)
            await hosts.call("members", nodes=list(range(n)),
                             members=[peer_of[i] for i in range(n)])
            # The remover reads round 1 before removing: the removed members' round-1
            # messages are then in the removal's causal past, so every member is entitled
            # to them (a member's messages concurrent with its removal are withdrawn).
            await hosts.call("read", nodes=[0], texts=sorted(_texts("r1", cast.first, params)))
        _say(n, started, "joiners added everywhere")
        with hosts.within(SETUP + PHASE_PER_CHANNEL * n * (n - 1) / 2, "the removal"):
            await hosts.call("remove", node=0, peers=[peer_of[i] for i in cast.removed], to=0)
            await hosts.call("send", nodes=cast.remaining, label="r2", **send)
            await hosts.call("members", nodes=cast.remaining,
                             members=[peer_of[i] for i in cast.remaining])
        _say(n, started, "removal applied everywhere; partition")
        await hosts.call("cut", sides=cast.sides)
        await hosts.call("send", nodes=cast.remaining, label="r3", **send)
        await trio.sleep(params.partition_seconds)
        await _check_partition(hosts, cast)
        await hosts.call("heal")
        healed = time.monotonic()
        await hosts.call("send", nodes=cast.remaining, label="r4", **send)
        converged, states = False, {}
        with trio.move_on_after(params.timeout):
            while True:  # the states are in other processes: poll them
                states = await _states(hosts)
                if converged := _converged(states, cast):
                    break
                await trio.sleep(POLL)
        convergence_s = time.monotonic() - healed if converged else math.nan
        why = "" if converged else _why(states, cast)
        _say(n, started, f"converged in {convergence_s:.2f} s after the heal" if converged else
             f"not converged {params.timeout:g} s after the heal: {why}")
        stats1 = _totals(await hosts.call("stats"))
        messages = params.per_round * (len(cast.first) + 3 * len(cast.remaining))
        events = float(max(s["count"] for s in states.values()))
        idle0 = stats1
        if params.idle_after > 0:
            await trio.sleep(params.idle_after)
            idle0 = _totals(await hosts.call("stats"))
        await trio.sleep(params.idle_seconds)
        stats2 = _totals(await hosts.call("stats"))
        profile_dir = tmp / "profiles"
        if params.profile_idle:  # after the measurement: the profiler slows everything down
            profile_dir.mkdir()
            await hosts.call("profile", on=True)
            await trio.sleep(min(params.idle_seconds, PROFILE_SECONDS))
            await hosts.call("profile", on=False, dir=str(profile_dir))
    top = _profile_top(profile_dir) if params.profile_idle else []
    run = Run(
        n, converged, repeat, convergence_s, messages, events,
        (stats1[1] - stats0[1]) / messages, 1000 * (stats1[0] - stats0[0]) / messages,
        100 * (stats2[0] - idle0[0]) / params.idle_seconds,
        (stats2[1] - idle0[1]) / params.idle_seconds, stats2[2] / n, setup_s)
    return run, top, why


def _profile_top(directory: Path) -> list[str]:
    files = sorted(str(p) for p in directory.glob("*.prof"))
    if not files:
        return []
    out = StringIO()
    stats = pstats.Stats(*files, stream=out)
    stats.sort_stats("tottime").print_stats(PROFILE_TOP)
    out.write("Kith's own functions by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(r"/node/", PROFILE_TOP)
    out.write("who sends on the channels:\n")
    stats.print_callers(r"connection.py.*\(_send\)")  # the keepalive or the queue
    return [line for line in out.getvalue().splitlines()
            if line.strip() and not line.lstrip().startswith(("Sat ", "Sun ", "Mon ", "Tue ",
                                                              "Wed ", "Thu ", "Fri "))]


async def run_all(params: Params) -> tuple[list[Run], list[str], dict[str, str]]:
    progress = report.Progress(len(params.members), "scale")
    runs: list[Run] = []
    top: list[str] = []
    diverged: dict[str, str] = {}
    for n in params.members:
        with tempfile.TemporaryDirectory(prefix="kith-scale-", dir=params.tmp) as tmp:
            run, top, why = await run_scale(n, 0, params, Path(tmp))
        if why:
            diverged[str(n)] = why
        runs.append(run)
        progress.step(f"N={n:<4} converged={run.converged} in {run.convergence_s:.2f} s, "
                      f"idle {run.idle_cpu_percent:.1f} % of a core, "
                      f"{run.rss_mb_per_node:.1f} MB/node")
    return runs, top, diverged


COLUMNS = (
    report.Column("convergence_s", "convergence s", ".2f"),
    report.Column("messages", "messages", ".0f"),
    report.Column("events", "events", ".0f"),
    report.Column("bytes_per_message", "bytes/msg", ",.0f"),
    report.Column("cpu_ms_per_message", "CPU ms/msg", ".2f"),
    report.Column("idle_cpu_percent", "idle CPU %", ".1f"),
    report.Column("idle_bytes_per_s", "idle B/s", ",.0f"),
    report.Column("rss_mb_per_node", "RSS MB/node", ".1f"),
    report.Column("setup_s", "set-up s", ".1f"),
)


def parse_args(argv: Sequence[str], prog: str) -> Params:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="N real nodes (over several processes, a full mesh on 127.77.0.0/16) in "
                    "one private group: joins, removals and a partition that heals while "
                    "members send; then whether every member converged, how fast, bytes and "
                    "CPU per message, the idle CPU of the whole group and RSS per node. "
                    "Method: docs/research.md.",
        epilog="Writes results.json (summary: converged, convergence_s, idle_cpu_percent, "
               "rss_mb_per_node ...), summary.csv, runs.csv and table.txt to --out.")
    parser.add_argument("--members", type=positive_ints, default=(8, 16), metavar="N,N,...",
                        help="group sizes, at least 4 (default 8,16)")
    parser.add_argument("--procs", type=int, default=4, metavar="P",
                        help="processes the nodes are spread over (default 4)")
    parser.add_argument("--per-round", type=int, default=1, metavar="M",
                        help="messages each member sends per round (default 1)")
    parser.add_argument("--size", type=int, default=64, metavar="BYTES",
                        help="message text size (default 64, at least 24)")
    parser.add_argument("--partition-seconds", type=float, default=2.0, metavar="S",
                        help="how long the partition lasts (default 2)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, metavar="S",
                        help="the quiet over which idle CPU is measured (default 30)")
    parser.add_argument("--idle-after", type=float, default=0.0, metavar="S",
                        help="start the idle window this long after convergence (default 0)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="longest wait for convergence after the heal (default 120)")
    parser.add_argument("--profile-idle", action="store_true",
                        help="then cProfile every host through a second quiet; the top goes "
                             "into results.json (idle_profile)")
    parser.add_argument("--out", type=Path, help="default bench-results/scale-<timestamp>/")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the data directories go (default: the system temp dir)")
    args = parser.parse_args(argv)
    if min(args.members) < 4:
        parser.error("--members: at least 4 (a joiner, a removed member and two others)")
    if args.procs < 1 or args.per_round < 1 or args.size < 24:
        parser.error("--procs and --per-round must be at least 1, --size at least 24")
    if (args.idle_seconds <= 0 or args.partition_seconds < 0 or args.timeout <= 0
            or args.idle_after < 0):
        parser.error("--idle-seconds and --timeout must be positive")
    out = args.out or Path("bench-results") / f"scale-{datetime.now():%Y%m%d-%H%M%S}"
    return Params(args.members, args.procs, args.per_round, args.size, args.partition_seconds,
                  args.idle_seconds, args.timeout, args.idle_after, args.profile_idle, out,
                  args.tmp)


def main(argv: Sequence[str] | None = None, prog: str = "kith bench scale") -> int:
    params = parse_args(list(sys.argv[1:] if argv is None else argv), prog)
    started, host = time.monotonic(), report.machine()
    measured = run_bench(run_all, params, prog)
    if measured is None:
        return 1
    runs, top, diverged = measured
    rows = [asdict(r) for r in runs]
    summary = report.summarise(rows, ("members", "converged"), METRICS)
    text_table = report.table(summary, ("members", "converged"), COLUMNS,
                              f"scale: {params.procs} process(es), {os.cpu_count()} CPU(s); "
                              f"idle over {params.idle_seconds:g} s")
    print(text_table)
    host["load_average_at_end"] = os.getloadavg()
    report.write_results(params.out, params=asdict(params), runs=rows, summary=summary,
                         text=text_table, host=host,
                         extra={"markdown": report.markdown(summary, ("members", "converged"),
                                                            COLUMNS),
                                "idle_profile": top, "not_converged": diverged})
    sys.stderr.write(f"results in {params.out} ({time.monotonic() - started:.0f} s)\n")
    return 0 if all(r.converged for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(prog="python -m node.bench.scale"))
