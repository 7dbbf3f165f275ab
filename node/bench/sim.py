"""``kith bench sim``: the real group cores over a simulated network, up to thousands of members.

    kith bench sim --members 10,100,500,1000 --mode raw,pairwise,sender-keys --messages 20
    kith bench sim --members 10,100,1000 --mode sender-keys,relay,pairwise,relay-pairwise

Each run (one N, one mode, one repeat) founds a group of N + 1 simulated
members (N receive each message, as in ``kith bench fanout``), sends M
messages of SIZE bytes from the first K members, and measures in simulated
time what real nodes would do: the real ``GroupCore``, Sender Keys, pairwise
encryption, sync planner and message encodings, over a network model with
uplink bandwidth, latency, loss, partitions and offline members
(``node.sim``). Same seed, same results, except the measured CPU times
(``cpu_ms_per_message``, ``relay_cpu_ms_per_message``) and the wall time
(``wall_s``). The relay modes put a relay node on the network that the
author sends each message to once (server-side fanout, ``node.sim.relay``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from node.bench import report
from node.sim.metrics import MEASURED, measure
from node.sim.runner import Simulation
from node.sim.scenario import DEFAULT_MODES, MAX_MEMBERS, MODES, Scenario

ALIASES = {"private": "sender-keys", "sender_keys": "sender-keys",
           "relay-private": "relay", "relay_pairwise": "relay-pairwise"}

METRICS = (
    "messages_per_s", "bytes_per_message", "envelope_bytes_per_event", "event_overhead_bytes",
    "encryptions_per_message", "signatures_per_message", "verifications_per_message",
    "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "undelivered", "convergence_s",
    "sync_bytes", "lacked_bytes", "sync_per_lacked", "ack_bytes_per_message",
    "membership_bytes", "rekey_events", "rekey_seals",
    "rekey_bytes", "joins", "departures", "rejected", "lost_in_flight", "sim_seconds",
    "cpu_ms_per_message", "wall_s", "author_bytes_per_message", "relay_bytes_per_message",
    "relay_cpu_ms_per_message", "last_member_ms", "author_cpu_busy_ms_per_message",
)
COLUMNS = [
    report.Column("messages_per_s", "msg/s", ".0f"),
    report.Column("bytes_per_message", "bytes/msg", ".0f"),
    report.Column("envelope_bytes_per_event", "envelope B", ".0f"),
    report.Column("encryptions_per_message", "enc", ".0f"),
    report.Column("signatures_per_message", "sig", ".0f"),
    report.Column("verifications_per_message", "verif", ".0f"),
    report.Column("latency_p50_ms", "p50 ms", ".1f"),
    report.Column("latency_p95_ms", "p95 ms", ".1f"),
    report.Column("latency_p99_ms", "p99 ms", ".1f"),
    report.Column("cpu_ms_per_message", "CPU ms/msg", ".3f", span=True),
]
CATCH_UP = [report.Column("convergence_s", "converge s", ".3f"),
            report.Column("sync_bytes", "sync B", ".0f"),
            report.Column("lacked_bytes", "lacked B", ".0f"),
            report.Column("sync_per_lacked", "sync/lacked", ".2f")]
CHURN = [report.Column("joins", "joins", ".0f"), report.Column("departures", "leaves", ".0f"),
         report.Column("rekey_seals", "seals", ".0f"),
         report.Column("rekey_bytes", "rekey B", ".0f")]
#: Who pays for fanout (shown when a relay mode ran): the author, the relay, the group.
RELAY_COLUMNS = [report.Column("author_bytes_per_message", "author B/msg", ".0f"),
                 report.Column("relay_bytes_per_message", "relay B/msg", ".0f"),
                 report.Column("relay_cpu_ms_per_message", "relay CPU ms/msg", ".3f", span=True),
                 report.Column("last_member_ms", "last ms", ".1f")]
#: ... and with a simulated CPU (``--cpu-us``): the author's CPU per message.
CPU_COLUMNS = [report.Column("author_cpu_busy_ms_per_message", "sim CPU ms/msg", ".3f")]
PLOTS = {
    "messages_per_s": "delivered messages/s (simulated)",
    "bytes_per_message": "bytes on the wire per message",
    "envelope_bytes_per_event": "bytes per copy beyond the plaintext",
    "encryptions_per_message": "encryptions per message",
    "verifications_per_message": "receiver signature checks per message",
    "latency_p95_ms": "p95 latency, simulated ms",
    "cpu_ms_per_message": "author CPU ms per message (measured)",
}
RELAY_PLOTS = {
    "author_bytes_per_message": "author's bytes on the wire per message",
    "relay_bytes_per_message": "relay's bytes on the wire per message",
    "relay_cpu_ms_per_message": "relay CPU ms per message (measured)",
    "last_member_ms": "until the last member has it, simulated ms (median)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _modes(text: str) -> tuple[str, ...]:
    values = tuple(ALIASES.get(v.strip(), v.strip()) for v in text.split(",") if v.strip())
    if not values or any(v not in MODES for v in values):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(MODES)}")
    return tuple(dict.fromkeys(values))


def parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Discrete-event simulation of Kith groups: the real group core, Sender "
                    "Keys and pairwise encryption over a simulated network, in simulated "
                    "time. N counts the members each message goes to (the group has N + 1).",
        epilog="Deterministic for a given --seed (repeat r uses seed + r), except the measured "
               "CPU and wall times. Results: a table on stdout, and results.json, runs.csv, "
               "summary.csv, table.txt and PNG plots in --out.")
    add = p.add_argument
    add("--members", type=_ints, default=(10, 100, 500, 1000), metavar="N,N,...",
        help=f"group sizes to simulate (each 1..{MAX_MEMBERS}; default 10,100,500,1000)")
    add("--mode", "--modes", dest="modes", type=_modes, default=DEFAULT_MODES,
        metavar="MODE,...",
        help="raw (same payload, no crypto, no group: the ceiling), pairwise, sender-keys "
             "(alias private), relay and relay-pairwise (the same two through a relay node: "
             "server-side fanout); default raw,pairwise,sender-keys")
    add("--messages", type=int, default=20, metavar="M", help="messages per run (default 20)")
    add("--size", type=int, default=256, metavar="BYTES", help="plaintext bytes (default 256)")
    add("--authors", type=int, default=1, metavar="K",
        help="members who send, round-robin (default 1); each author's sender key is sealed "
             "to every member, so K authors cost K x N seals")
    add("--latency-ms", type=float, default=1.0, metavar="MS",
        help="one-way latency of every link (default 1)")
    add("--bandwidth-mbps", type=float, default=100.0, metavar="MBPS",
        help="every member's uplink, shared by its links (default 100; 0: unlimited)")
    add("--loss", type=float, default=0.0, metavar="P",
        help="per-packet loss; TCP retransmits, so it delays (default 0)")
    add("--offline", type=float, default=0.0, metavar="FRACTION",
        help="fraction of non-authors offline during the traffic; they return when it is "
             "over and catch up through sync (default 0)")
    add("--churn", type=float, default=0.0, metavar="RATE",
        help="joins and leaves per simulated second during --duration (real ADD and REMOVE "
             "events; authors rotate their sender key lazily after a departure)")
    add("--duration", type=float, default=0.0, metavar="S",
        help="spread the messages evenly over S simulated seconds (default 0: a burst)")
    add("--partition", action="store_true",
        help="split the members in two random halves until the traffic is over, then heal")
    add("--cpu-us", type=float, default=0.0, metavar="US",
        help="microseconds of a node's CPU per message it sends or receives, a stage before "
             "its uplink and before it sees a message (default 0: processing is free)")
    add("--relay-mbps", type=float, default=None, metavar="MBPS",
        help="the relay's uplink (relay modes; default: as --bandwidth-mbps; 0: unlimited)")
    add("--relay-cpu-us", type=float, default=None, metavar="US",
        help="the relay's CPU per message (relay modes; default: as --cpu-us)")
    add("--seed", type=int, default=1, help="seed for keys, nonces, loss, churn (default 1)")
    add("--repeat", type=int, default=1, metavar="R", help="runs per (N, mode) (default 1)")
    add("--out", type=Path, metavar="DIR", help="default bench-results/sim-<timestamp>/")
    add("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def scenarios(args: argparse.Namespace) -> list[tuple[int, Scenario]]:
    """Every (repeat, scenario), repeats outermost, checked before anything runs."""
    plan = []
    for r in range(args.repeat):
        for n in args.members:
            for mode in args.modes:
                plan.append((r, Scenario(
                    members=n, mode=mode, messages=args.messages, size=args.size,
                    authors=args.authors, latency=args.latency_ms / 1000,
                    bandwidth=args.bandwidth_mbps * 1e6 if args.bandwidth_mbps > 0 else None,
                    loss=args.loss, offline=args.offline, churn=args.churn,
                    duration=args.duration, partition=args.partition, seed=args.seed + r,
                    cpu=args.cpu_us / 1e6, relay_bandwidth=_relay_bandwidth(args),
                    relay_cpu=None if args.relay_cpu_us is None else args.relay_cpu_us / 1e6)))
    return plan


def _relay_bandwidth(args: argparse.Namespace) -> float | Literal["members"] | None:
    if args.relay_mbps is None:
        return "members"
    return args.relay_mbps * 1e6 if args.relay_mbps > 0 else None


def run_one(scenario: Scenario, repeat: int = 0) -> dict[str, Any]:
    """One run as a flat row: keys, the scenario's seed, every metric."""
    started = time.perf_counter()
    sim = Simulation(scenario)
    sim.run()
    row: dict[str, Any] = {"members": scenario.members, "mode": scenario.mode,
                           "repeat": repeat, "seed": scenario.seed}
    row |= measure(sim)
    row["wall_s"] = time.perf_counter() - started
    return row


def main(argv: Sequence[str] | None = None, prog: str = "kith bench sim") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser(prog)
    try:
        args = p.parse_args(argv)
        if args.repeat < 1:
            raise _UsageError("--repeat must be at least 1")
        if args.bandwidth_mbps < 0 or (args.relay_mbps or 0) < 0:
            raise _UsageError("--bandwidth-mbps and --relay-mbps must be >= 0 (0: unlimited)")
        plan = scenarios(args)
    except (_UsageError, ValueError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    out = args.out or Path("bench-results") / f"sim-{datetime.now():%Y%m%d-%H%M%S}"
    host = report.machine()
    started = time.perf_counter()
    progress = report.Progress(len(plan), "sim")
    runs = []
    for r, scenario in plan:
        row = run_one(scenario, r)
        runs.append(row)
        progress.step(f"N={scenario.members} {scenario.mode} run {r + 1}/{args.repeat}: "
                      f"{row['messages_per_s']:.0f} msg/s, {row['bytes_per_message']:.0f} B/msg "
                      f"({row['wall_s']:.1f} s)")
    summary = report.summarise(runs, ["members", "mode"], METRICS, order={"mode": args.modes})
    columns = list(COLUMNS)
    if args.offline or args.partition:
        columns += CATCH_UP
    if args.churn:
        columns += CHURN
    relayed = any(scenario.relayed for _, scenario in plan)
    if relayed:
        columns += RELAY_COLUMNS
    if args.cpu_us or args.relay_cpu_us:
        columns += CPU_COLUMNS
    header = (f"kith bench sim: {args.messages} messages of {args.size} B from "
              f"{args.authors} author(s); latency {args.latency_ms:g} ms, uplink "
              f"{args.bandwidth_mbps:g} Mbit/s{relay_note(args) if relayed else ''}, "
              f"CPU {args.cpu_us:g} us/msg{relay_cpu_note(args) if relayed else ''}, "
              f"loss {args.loss:g}; median of {args.repeat} "
              f"run(s), seed {args.seed}; CPU measured, everything else simulated")
    params = dict(vars(args), out=out, measured=list(MEASURED))
    report.publish(out, summary=summary, runs=runs, keys=["members", "mode"], columns=columns,
                   header=header, params=params, host=host,
                   plots=None if args.no_plots else PLOTS | (RELAY_PLOTS if relayed else {}),
                   title="kith bench sim", seconds=time.perf_counter() - started)
    return 0


def relay_cpu_note(args: argparse.Namespace) -> str:
    return "" if args.relay_cpu_us is None else f" (the relay's {args.relay_cpu_us:g})"


def relay_note(args: argparse.Namespace) -> str:
    if args.relay_mbps is None:
        return " (the relay's too)"
    return f", the relay's {args.relay_mbps:g}" if args.relay_mbps else ", the relay's unlimited"


if __name__ == "__main__":
    sys.exit(main(prog="python -m node.bench.sim"))
