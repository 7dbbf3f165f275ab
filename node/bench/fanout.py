"""Fanout on real nodes: how fast one author pushes messages to N members, and at what cost.

    kith bench fanout [--members 2,8,32]
                      [--mode raw,pairwise,sender-keys[,relay,relay-pairwise,libp2p]]
                      [--messages 200] [--size 256] [--repeat 3] [--out DIR]
    (scripts/bench-fanout is the same, creating .venv first)

Theory of operation
-------------------
One *run* measures one (N, mode). The author runs in this process; the N
receivers run in other processes (``python -m node.bench.fanout_receivers``),
several receiver nodes per process (``--receiver-procs``, default 4) so that
N = 32 costs four interpreters rather than 32. Everything is on 127.0.0.1,
mDNS off, in fresh temporary data directories.

Set-up, not timed: every receiver node dials the author; the author creates
the group, adds each receiver and sends one warm-up message (in a private
group this is where the sender key is made and sealed to every member); a
receiver reports ``ready`` once it has decrypted the warm-up, so it has the
group and the keys.

Timed: the author calls ``GroupService.send`` M times, yielding to trio after
each call as a control-socket request would. The wall clock runs from just
before the first send until the last receiver has decrypted message M;
receivers timestamp each message with ``time.monotonic()`` (CLOCK_MONOTONIC,
one clock for all processes on Linux) and report the times when they have all
M. Sender CPU is ``time.process_time()`` of this process from the first send
until the last message has been acknowledged by every receiver: it includes
the author's networking (channel encryption, syscalls, reading the acks and
storing them) because with client-side fanout that is the sender's cost too.

``relay`` and ``relay-pairwise`` are server-side fanout on the same nodes: a
relay node (not a member: it cannot read or post) runs in a process of its
own (``node.bench.relay_fanout``), every receiver dials it too, the author
designates it and runs with ``fanout = "relay"``: it sends each message once,
flagged, to the relay, which pushes it to every member (in a pairwise group
the author's copy carries every member's ciphertext). The relay's own CPU time
and bytes over the same window are measured separately (``relay CPU``,
``relay B``), and the sender's CPU window ends when the relay has
acknowledged the last message and every receiver has it.

``last ms`` is, per message, the time until the last member had it (median
over the messages): the time until the whole group has a message.

``raw`` is the ceiling: the same trio fanout shape (a queue and a sender task
per receiver, one ``send_all`` per message per receiver) carrying M
length-prefixed SIZE-byte messages over plain TCP, with no crypto, no group
logic, no storage and no acks.

A node drops a peer with more than ``Config.send_queue`` (128) messages queued
and a burst of M sends queues up to M, so nodes here get ``queue_size(M)``:
we measure the burst, not the drop-and-redial path (docs/research.md).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from node.api.python import open_node
from node.bench import report
from node.bench.fanout_receivers import WARMUP, frame, receivers
from node.bench.harness import (
    METRICS,
    PER_DELIVERY,
    SETUP_TIMEOUT,
    Params,
    RssSampler,
    Run,
    message_text,
    percentile,
    positive_ints,
    queue_size,
    quiet,
    run_bench,
)
from node.bench.relay_fanout import (
    RELAY_COLUMNS,
    RELAY_GROUP_MODE,
    RELAY_PLOTS,
    RelayProcess,
    relay_costs,
    relay_process,
    relayed,
)
from node.group.bodies import MAX_TEXT
from node.ids import parse_peer_id

#: Modes in table order. ``sender-keys`` is a ``private`` group; ``relay`` and
#: ``relay-pairwise`` the same two through a relay (server-side fanout,
#: node/bench/relay_fanout.py); ``libp2p`` is py-libp2p floodsub (node/bench/floodsub.py,
#: the ``compare`` extra).
MODES = ("raw", "pairwise", "sender-keys", "relay", "relay-pairwise", "libp2p")
DEFAULT_MODES = ("raw", "pairwise", "sender-keys")
ALIASES = {"private": "sender-keys", "sender_keys": "sender-keys", "floodsub": "libp2p",
           "relay-private": "relay", "relay_pairwise": "relay-pairwise"}
GROUP_MODE = {"pairwise": "pairwise", "sender-keys": "private"}


@dataclass(frozen=True, slots=True)
class FanoutRun(Run):
    """A run of this benchmark: ``Run`` and what server-side fanout adds."""

    #: Per message, until the last receiver had it; the median over the messages.
    last_member_ms: float = math.nan
    #: The relay process's CPU time and channel bytes sent over the same window, per message.
    relay_cpu_ms_per_message: float = math.nan
    relay_wire_bytes_per_message: float = math.nan


@dataclass(frozen=True, slots=True)
class FanoutParams(Params):
    #: Seconds between one send and the next (0: a burst, the default): with a gap
    #: longer than a message takes, latency and ``last ms`` are one message's, unqueued.
    interval: float = 0.0


#: What a run measured (``METRICS`` and the fields ``FanoutRun`` adds).
FANOUT_METRICS = METRICS + tuple(f.name for f in fields(FanoutRun)[len(fields(Run)):])


# -- one run --------------------------------------------------------------------------------


def _result(
    n: int, mode: str, repeat: int, messages: int, t0: float, cpu: float,
    sent: list[float], done: list[dict[str, Any]], costs: tuple[float, float, float],
    *, wire_bytes: float, peak_rss: float, relay: dict[str, float] | None = None,
) -> FanoutRun:
    arrivals = [line["arrivals"] for line in done]
    end = max(max(times) for times in arrivals)
    latencies = [t - sent[i] for times in arrivals for i, t in enumerate(times)]
    last_member = [max(times[i] for times in arrivals) - sent[i] for i in range(messages)]
    seconds = end - t0
    receiver_rss = max((line.get("rss_mb", math.nan) for line in done), default=math.nan)
    return FanoutRun(n, mode, repeat, seconds, messages / seconds, 1000 * cpu / messages,
                     *costs, 1000 * percentile(latencies, 0.5),
                     1000 * percentile(latencies, 0.95), 1000 * percentile(latencies, 0.99),
                     wire_bytes / messages, n * messages / seconds, peak_rss, receiver_rss,
                     1000 * percentile(last_member, 0.5), **(relay or {}))


async def run_kith(mode: str, n: int, repeat: int, params: Params, tmp: Path) -> FanoutRun:
    if mode in RELAY_GROUP_MODE:
        async with relay_process(tmp, params.messages) as relay:
            return await _run_kith(mode, n, repeat, params, tmp, relay)
    return await _run_kith(mode, n, repeat, params, tmp, None)


async def _run_kith(mode: str, n: int, repeat: int, params: Params, tmp: Path,
                    relay: RelayProcess | None) -> FanoutRun:
    m = params.messages
    via = [] if relay is None else [relay.listen]
    fanout: dict[str, Any] = {} if relay is None else {"fanout": "relay"}
    async with open_node(tmp / "author", name="author", send_queue=queue_size(m), peers=via,
                         **fanout) as author, \
            receivers("kith", n, params.receiver_procs, tmp, ",".join([author.listen, *via]),
                      m) as rx:
        node, service = author.node, author.service
        with rx.within(SETUP_TIMEOUT):
            peers = [parse_peer_id(line["peer"]) for line in await rx.expect("up", n)]
            relay_peer = None if relay is None else parse_peer_id(relay.peer)
            linked = peers if relay_peer is None else [*peers, relay_peer]
            await node.wait_until(lambda: all(p in node.connections for p in linked))
            group = service.create("bench", GROUP_MODE.get(mode) or RELAY_GROUP_MODE[mode])
            for peer in peers:
                service.add(group, peer)
            if relay is not None and relay_peer is not None:
                await relay.link(n + 1)  # every receiver and the author
                service.relay(group, relay_peer, True)
                await relay.hold(len(group.core.ordered()))  # it took the group
            service.send(group, WARMUP)
            await rx.expect("ready", n)
            streams = [node.connections[p].stream for p in linked]
            await quiet(streams)

        texts = [message_text(i, params.size) for i in range(m)]
        sent = [0.0] * m
        ids = []
        sampler = RssSampler()
        relay_marks = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            with rx.within(SETUP_TIMEOUT + PER_DELIVERY * n * m + m * _interval(params)):
                if relay is not None:
                    relay_marks.append(await relay.mark())
                wire0 = sum(stream.bytes_sent for stream in streams)
                cpu0, t0 = time.process_time(), time.monotonic()
                for i in range(m):
                    sent[i] = time.monotonic()
                    ids.append(service.send(group, texts[i]).id)
                    await _pause(params)
                done = await rx.expect("done", n)
                last = ids[-1]
                await service.wait_until(  # (through a relay too: members ack the author)
                    lambda: all(p in group.acked.get(last, {}) for p in peers))
                cpu = time.process_time() - cpu0
                wire = sum(stream.bytes_sent for stream in streams) - wire0
                if relay is not None:
                    relay_marks.append(await relay.mark(m))
            nursery.cancel_scope.cancel()
    counters = [group.counters[event_id] for event_id in ids]
    costs = (sum(c.encryptions for c in counters) / m, sum(c.signatures for c in counters) / m,
             sum(c.bytes_out for c in counters) / m)
    return _result(n, mode, repeat, m, t0, cpu, sent, done, costs,
                   wire_bytes=wire, peak_rss=sampler.peak,
                   relay=relay_costs(relay_marks[0], relay_marks[-1], m) if relay_marks else None)


def _interval(params: Params) -> float:
    return params.interval if isinstance(params, FanoutParams) else 0.0


async def _pause(params: Params) -> None:
    """After each timed send: yield (a burst), or wait ``--interval-ms``."""
    interval = _interval(params)
    if interval > 0:
        await trio.sleep(interval)
    else:
        await trio.lowlevel.checkpoint()


async def _drain(stream: trio.SocketStream, queue: trio.MemoryReceiveChannel[bytes]) -> None:
    async with queue:
        async for data in queue:
            await stream.send_all(data)


async def run_raw(n: int, repeat: int, params: Params, tmp: Path) -> FanoutRun:
    m = params.messages
    payloads = [message_text(i, params.size).encode() for i in range(m)]
    sent = [0.0] * m
    streams: list[trio.SocketStream] = []
    async with receivers("raw", n, params.receiver_procs, tmp, "-", m) as rx:
        try:
            with rx.within(SETUP_TIMEOUT):
                for line in await rx.expect("up", n):
                    streams.append(await trio.open_tcp_stream("127.0.0.1", line["port"]))
                for stream in streams:
                    await stream.send_all(frame(WARMUP.encode()))
                await rx.expect("ready", n)
            sampler = RssSampler()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler.run)
                queues = []
                for stream in streams:
                    queue_in, queue_out = trio.open_memory_channel[bytes](math.inf)
                    queues.append(queue_in)
                    nursery.start_soon(_drain, stream, queue_out)
                with rx.within(SETUP_TIMEOUT + PER_DELIVERY * n * m + m * _interval(params)):
                    cpu0, t0 = time.process_time(), time.monotonic()
                    for i in range(m):
                        sent[i] = time.monotonic()
                        data = frame(payloads[i])
                        for queue in queues:
                            queue.send_nowait(data)
                        await _pause(params)
                    done = await rx.expect("done", n)
                    cpu = time.process_time() - cpu0
                for queue in queues:
                    queue.close()
                nursery.cancel_scope.cancel()
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)
    wire = float(n * (4 + params.size))  # exactly what the frames carry, per message
    return _result(n, "raw", repeat, m, t0, cpu, sent, done, (0.0, 0.0, wire),
                   wire_bytes=wire * m, peak_rss=sampler.peak)


# -- the whole benchmark ----------------------------------------------------------------------


async def run_one(mode: str, n: int, repeat: int, params: Params, tmp: Path) -> Run:
    if mode == "raw":
        return await run_raw(n, repeat, params, tmp)
    if mode == "libp2p":
        from node.bench.floodsub import run_floodsub

        return await run_floodsub(n, repeat, params, tmp)
    return await run_kith(mode, n, repeat, params, tmp)


async def run_all(params: Params) -> list[Run]:
    """Every (repeat, N, mode) run, repeats outermost so slow drifts spread over all rows."""
    plan = [(r, n, mode) for r in range(params.repeat) for n in params.members
            for mode in params.modes]
    progress = report.Progress(len(plan), "fanout")
    runs = []
    for r, n, mode in plan:
        with tempfile.TemporaryDirectory(prefix="kith-bench-", dir=params.tmp) as tmp:
            run = await run_one(mode, n, r, params, Path(tmp))
        runs.append(run)
        progress.step(f"N={n:<3} {mode:<11} run {r + 1}/{params.repeat}: "
                      f"{run.messages_per_s:7.0f} msg/s {run.cpu_ms_per_message:7.3f} ms CPU/msg "
                      f"p95 {run.latency_p95_ms:6.0f} ms ({run.seconds:.2f} s)"
                      + (f"; relay {run.relay_cpu_ms_per_message:.3f} ms CPU/msg"
                         if isinstance(run, FanoutRun) and mode in RELAY_GROUP_MODE else ""))
    return runs


def summarise(runs: Sequence[Run], params: Params) -> list[report.Row]:
    """Per (N, mode): the median, min and max of every metric over the repeats, and the
    sender CPU relative to raw at the same N (``x_raw_cpu``) and the delivered rate
    relative to raw (``of_raw_rate``, the goal is at least 0.5 for sender-keys)."""
    rows = report.summarise([asdict(r) for r in runs], ("members", "mode"), FANOUT_METRICS,
                            order={"mode": MODES})
    raw = {row["members"]: row for row in rows if row["mode"] == "raw"}
    for row in rows:
        base = raw.get(row["members"])
        for name, metric in (("x_raw_cpu", "cpu_ms_per_message"),
                             ("of_raw_rate", "messages_per_s")):
            value = math.nan
            if base is not None and base[metric]["median"] > 0:
                value = row[metric]["median"] / base[metric]["median"]
            row[name] = {"median": value, "min": value, "max": value}
    return rows


COLUMNS = (
    report.Column("messages_per_s", "msg/s", ".0f", span=True),
    report.Column("of_raw_rate", "of raw", ".2f"),
    report.Column("cpu_ms_per_message", "CPU ms/msg", ".3f", span=True),
    report.Column("x_raw_cpu", "x raw", ".1f"),
    report.Column("encryptions_per_message", "enc", ".0f"),
    report.Column("signatures_per_message", "sig", ".0f"),
    report.Column("bytes_per_message", "app B/msg", ".0f"),
    report.Column("wire_bytes_per_message", "wire B/msg", ".0f"),
    report.Column("latency_p50_ms", "p50 ms", ".0f"),
    report.Column("latency_p95_ms", "p95 ms", ".0f"),
    report.Column("latency_p99_ms", "p99 ms", ".0f"),
    report.Column("last_member_ms", "last ms", ".0f"),
    report.Column("peak_rss_mb", "RSS MB", ".0f"),
)

#: What the plots show, one PNG each.
PLOTS = {
    "messages_per_s": "delivered messages/s (all members)",
    "deliveries_per_s": "deliveries/s (members x msg/s)",
    "cpu_ms_per_message": "sender CPU ms per message",
    "wire_bytes_per_message": "bytes on the wire per message (sender)",
    "encryptions_per_message": "encryptions per message",
    "signatures_per_message": "signatures per message",
    "latency_p50_ms": "p50 delivery latency (ms)",
    "latency_p95_ms": "p95 delivery latency (ms)",
    "latency_p99_ms": "p99 delivery latency (ms)",
    "last_member_ms": "until the last member has it (ms, median over messages)",
    "peak_rss_mb": "author peak RSS (MB)",
}


def columns(params: Params) -> tuple[report.Column, ...]:
    """The table's columns: the relay's own costs too when a relay mode ran."""
    return COLUMNS + RELAY_COLUMNS if relayed(params.modes) else COLUMNS


def plots(params: Params) -> dict[str, str]:
    return PLOTS | RELAY_PLOTS if relayed(params.modes) else PLOTS


def header(params: Params) -> str:
    gap = f", {1000 * _interval(params):g} ms apart" if _interval(params) else ""
    return (f"fanout: {params.messages} messages of {params.size} B per run{gap}; median [min-max] "
            f"of {params.repeat} run(s); {os.cpu_count()} CPU(s), "
            f"Python {report.machine()['python']}")


# -- command line -----------------------------------------------------------------------------


def _modes(text: str) -> tuple[str, ...]:
    values = tuple(ALIASES.get(v.strip(), v.strip()) for v in text.split(",") if v.strip())
    if not values or any(v not in MODES for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of {', '.join(MODES)}")
    return tuple(dict.fromkeys(values))


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="How fast one author pushes messages to N members of a group on real "
                    "nodes (receivers in other processes, all on 127.0.0.1), what each message "
                    "costs the sender (CPU, encryptions, signatures, bytes), and the delivery "
                    "latency, per mode, against plain TCP fanout of the same bytes (raw). "
                    "Method: docs/research.md.",
        epilog="Modes: raw (plain TCP, the ceiling), pairwise (one encryption per member), "
               "sender-keys (alias private: one encryption per message), relay and "
               "relay-pairwise (the same two through a relay node in its own process: "
               "server-side fanout; its CPU and bytes are measured too), libp2p (py-libp2p "
               "floodsub, needs: pip install -e '.[compare]'). Writes results.json, "
               "summary.csv, runs.csv, table.txt and PNG plots (with matplotlib) to --out.")
    parser.add_argument("--members", type=positive_ints, default=(2, 8, 32), metavar="N,N,...",
                        help="group sizes: members other than the author (default 2,8,32)")
    parser.add_argument("--mode", "--modes", dest="modes", type=_modes, default=DEFAULT_MODES,
                        metavar="MODE,...", help="default raw,pairwise,sender-keys")
    parser.add_argument("--messages", type=int, default=200, metavar="M",
                        help="messages per run (default 200)")
    parser.add_argument("--size", type=int, default=256, metavar="BYTES",
                        help=f"message text size, 8..{MAX_TEXT} (default 256)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="runs per (N, mode); the table shows median [min-max] (default 3)")
    parser.add_argument("--interval-ms", type=float, default=0.0, metavar="MS",
                        help="wait MS between sends (default 0: a burst of M); with a gap "
                             "longer than a message takes, latency is one message's")
    parser.add_argument("--receiver-procs", type=int, default=4, metavar="P",
                        help="processes the receiver nodes are spread over (default 4)")
    parser.add_argument("--out", type=Path, help="default bench-results/fanout-<timestamp>/")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the data directories go (default: the system temp dir; "
                             "/dev/shm takes fsync out of the picture)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def parse_args(argv: Sequence[str], prog: str = "kith bench fanout") -> tuple[Params, bool]:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeat < 1 or args.receiver_procs < 1:
        parser.error("--messages, --repeat and --receiver-procs must be at least 1")
    if args.interval_ms < 0:
        parser.error("--interval-ms must be at least 0")
    if not 8 <= args.size <= MAX_TEXT:
        parser.error(f"--size must be 8..{MAX_TEXT}")
    if "libp2p" in args.modes:
        from node.bench.floodsub import available

        missing = available()
        if missing is not None:
            parser.error(f"mode libp2p: {missing}")
    out = args.out or Path("bench-results") / f"fanout-{datetime.now():%Y%m%d-%H%M%S}"
    params = FanoutParams(args.members, args.modes, args.messages, args.size, args.repeat,
                          args.receiver_procs, out, args.tmp, args.interval_ms / 1000)
    return params, not args.no_plots


def main(argv: Sequence[str] | None = None, prog: str = "kith bench fanout") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    params, draw = parse_args(argv, prog)
    started, host = time.monotonic(), report.machine()
    runs = run_bench(run_all, params, prog)
    if runs is None:
        return 1
    report.publish(params.out, summary=summarise(runs, params), runs=[asdict(r) for r in runs],
                   keys=("members", "mode"), columns=columns(params), header=header(params),
                   params=asdict(params), host=host, plots=plots(params) if draw else None,
                   title=f"fanout, {params.size} B messages",
                   seconds=time.monotonic() - started)
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sys.exit(main(prog="bench-fanout"))
