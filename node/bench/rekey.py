"""What removing a member costs, until every remaining member can send in the new epoch.

    kith bench rekey [--members 4,8,16] [--mode pairwise,sender-keys] [--repeat 3] [--out DIR]

Theory of operation
-------------------
One run is one (N, mode): N nodes, all in this process on 127.0.0.1 (mDNS
off, fresh data directories), every node connected to every other, as the
members of a real group would be. The owner creates the group and adds the
others; every member sends a warm-up message, and the run waits until every
node has decrypted every warm-up (so every member holds every other's sender
key: the state of a group that has been talking).

Then two *rounds*, each timed from its start until every remaining member
has decrypted one message from every remaining member:

- **control**: every member but the last to join sends one message.
  Nothing else happens.
- **removal**: the owner removes the last to join and, once
  every remaining node has applied the removal, every remaining member sends
  one message. In a Sender Keys group (``sender-keys``) each member's next
  message is preceded by a new sender key (epoch + 1) sealed to every
  remaining member (lazy rotation, docs/protocol.md: the SENDER_KEY event
  commits to the chain, each member gets only its own sealed copy beside it);
  in ``pairwise`` no key
  changes: the removed member is simply no longer a recipient.

At the end of the removal round every remaining member can send in the new
epoch and has every other's new key: the rekey is complete. The cost of the
removal is the removal round minus the control round: **events** (the REMOVE
and the SENDER_KEY events), **sealed keys** (chain keys sealed to members),
**bytes** written by all nodes' channels (every record, acks included),
**CPU** of the whole process (every node's work: the group's total cost,
not one member's) and **wall** time. Totals of the removal round are kept
too. All nodes share one process and one CPU, so wall times are the sum of
everyone's work, not what a member would see on its own machine. The periodic
anti-entropy exchange is pushed past the run (``QUIET_SYNC``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from functools import partial
from pathlib import Path

import trio

from node.api.python import Kith, open_node
from node.bench import report
from node.bench.fanout import ALIASES, GROUP_MODE
from node.bench.harness import BenchError, positive_ints, run_bench
from node.group.bodies import SenderKey, decode_body
from node.group.events import GroupId, Kind
from node.ids import PeerId
from node.service.groups import Group

MODES = ("pairwise", "sender-keys")
#: Seconds for starting the nodes, connecting them and the warm-up (per node).
SETUP_PER_NODE = 5.0
#: Seconds a round may take (per node).
ROUND_PER_NODE = 5.0
#: The periodic vector exchange (30 s by default) would fire during the rounds of large
#: groups and stream to every peer whatever live pushes had not reached it yet: tenfold
#: swings in bytes between repeats at N = 32. It is pushed past the run; sync on connect
#: and the nudge after relayed events stay.
QUIET_SYNC = 3600.0


@dataclass(frozen=True, slots=True)
class Params:
    members: tuple[int, ...]
    modes: tuple[str, ...]
    repeat: int
    out: Path
    tmp: Path


@dataclass(frozen=True, slots=True)
class Totals:
    """What one round cost the whole group."""

    events: int
    sender_keys: int
    sealed_keys: int
    bytes: int
    cpu_ms: float
    wall_ms: float


@dataclass(frozen=True, slots=True)
class Run:
    members: int
    mode: str
    repeat: int
    #: The removal round minus the control round: the rekey's own cost.
    extra_events: float
    extra_sealed_keys: float
    extra_bytes: float
    extra_cpu_ms: float
    extra_wall_ms: float
    #: The removal round on its own (the REMOVE, the new keys and one message per member).
    removal_events: float
    removal_sender_keys: float
    removal_bytes: float
    removal_cpu_ms: float
    removal_wall_ms: float
    control_bytes: float
    control_cpu_ms: float


METRICS = tuple(f.name for f in fields(Run))[3:]


def _wire_bytes(nodes: Sequence[Kith]) -> int:
    return sum(conn.stream.bytes_sent for k in nodes for conn in k.node.connections.values())


def _group(kith: Kith, group_id: GroupId) -> Group:
    return kith.service.groups[group_id]


def _decrypted(kith: Kith, group_id: GroupId, texts: set[str]) -> bool:
    group = kith.service.groups.get(group_id)
    return group is not None and texts <= set(group.texts.values())


async def _all_decrypted(nodes: Sequence[Kith], group_id: GroupId, texts: set[str]) -> None:
    for kith in nodes:
        await kith.service.wait_until(partial(_decrypted, kith, group_id, texts))


def _removed(kith: Kith, group_id: GroupId, victim: PeerId) -> bool:
    return victim not in _group(kith, group_id).core.state.members


def _connected(kith: Kith, peers: set[PeerId]) -> bool:
    return peers <= set(kith.node.connections)


def _has_members(kith: Kith, group_id: GroupId, count: int) -> bool:
    group = kith.service.groups.get(group_id)
    return group is not None and len(group.core.state.members) == count


async def _round(
    nodes: list[Kith], group_id: GroupId, label: str, last: Kith, remove: bool
) -> Totals:
    """Everyone but ``last`` sends one message; with ``remove``, the owner removes ``last``
    first. Measured until every remaining node has decrypted every message."""
    owner = nodes[0]
    remaining = [k for k in nodes if k is not last]
    before = len(_group(owner, group_id).core.ordered())
    wire0, cpu0, t0 = _wire_bytes(nodes), time.process_time(), time.monotonic()
    if remove:
        victim = last.node.peer_id
        owner.service.remove(_group(owner, group_id), victim)
        for kith in remaining:
            await kith.service.wait_until(partial(_removed, kith, group_id, victim))
    texts = {f"{label} from {k.node.name}" for k in remaining}
    for kith in remaining:
        kith.service.send(_group(kith, group_id), f"{label} from {kith.node.name}")
        await trio.lowlevel.checkpoint()
    await _all_decrypted(nodes if not remove else remaining, group_id, texts)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    wire = _wire_bytes(nodes) - wire0
    new = _group(owner, group_id).core.ordered()[before:]
    keys = [e for e in new if e.kind is Kind.SENDER_KEY]
    sealed = 0
    by_id = {k.node.peer_id: k for k in nodes}
    for event in keys:
        body = decode_body(Kind.SENDER_KEY, event.body, mode="private")
        assert isinstance(body, SenderKey)
        # committed: one sealed copy per recipient, kept by the author; inline: in the body
        held = _group(by_id[event.author], group_id).own_copies.get(event.id, {})
        sealed += len(body.keys) + len(held)
    return Totals(len(new), len(keys), sealed, wire, 1000 * cpu, 1000 * wall)


async def run_rekey(mode: str, n: int, repeat: int, tmp: Path) -> Run:
    async with AsyncExitStack() as stack:
        nodes: list[Kith] = []
        for k in range(n):
            kith = await stack.enter_async_context(open_node(
                tmp / f"n{k}", name=f"n{k}", peers=[other.listen for other in nodes],
                sync_interval=QUIET_SYNC))
            nodes.append(kith)
        with trio.move_on_after(SETUP_PER_NODE * n) as setup:
            for kith in nodes:
                others = {o.node.peer_id for o in nodes if o is not kith}
                await kith.node.wait_until(partial(_connected, kith, others))
            owner = nodes[0]
            group = owner.service.create("rekey", GROUP_MODE[mode])
            for kith in nodes[1:]:
                owner.service.add(group, kith.node.peer_id)
            # Everyone must know everyone before speaking: a pairwise message has no copy
            # for a member its author did not know of yet.
            for kith in nodes:
                await kith.service.wait_until(partial(_has_members, kith, group.id, n))
            warm = {f"warm-up from {k.node.name}" for k in nodes}
            for kith in nodes:
                kith.service.send(_group(kith, group.id), f"warm-up from {kith.node.name}")
            await _all_decrypted(nodes, group.id, warm)
        if setup.cancelled_caught:
            raise BenchError(f"N={n} {mode}: set-up did not complete within "
                             f"{SETUP_PER_NODE * n:g} s")
        with trio.move_on_after(ROUND_PER_NODE * n) as rounds:
            control = await _round(nodes, group.id, "control", nodes[-1], remove=False)
            removal = await _round(nodes, group.id, "after removal", nodes[-1], remove=True)
        if rounds.cancelled_caught:
            raise BenchError(f"N={n} {mode}: a round did not complete within "
                             f"{ROUND_PER_NODE * n:g} s")
    return Run(
        n, mode, repeat,
        removal.events - control.events, removal.sealed_keys - control.sealed_keys,
        removal.bytes - control.bytes, removal.cpu_ms - control.cpu_ms,
        removal.wall_ms - control.wall_ms,
        removal.events, removal.sender_keys, removal.bytes, removal.cpu_ms, removal.wall_ms,
        control.bytes, control.cpu_ms,
    )


async def run_all(params: Params) -> list[Run]:
    plan = [(r, n, mode) for r in range(params.repeat) for n in params.members
            for mode in params.modes]
    progress = report.Progress(len(plan), "rekey")
    runs = []
    for r, n, mode in plan:
        with tempfile.TemporaryDirectory(prefix="kith-rekey-", dir=params.tmp) as tmp:
            run = await run_rekey(mode, n, r, Path(tmp))
        runs.append(run)
        progress.step(f"N={n:<3} {mode:<11} run {r + 1}/{params.repeat}: "
                      f"{run.extra_events:.0f} extra events, {run.extra_sealed_keys:.0f} sealed "
                      f"keys, {run.extra_bytes / 1024:.1f} KiB, {run.extra_cpu_ms:.0f} ms CPU")
    return runs


COLUMNS = (
    report.Column("extra_events", "+events", ".0f"),
    report.Column("extra_sealed_keys", "+sealed keys", ".0f"),
    report.Column("extra_bytes", "+bytes", ".0f", span=True),
    report.Column("extra_cpu_ms", "+CPU ms", ".1f", span=True),
    report.Column("extra_wall_ms", "+wall ms", ".0f"),
    report.Column("removal_events", "round events", ".0f"),
    report.Column("removal_bytes", "round bytes", ".0f"),
    report.Column("removal_cpu_ms", "round CPU ms", ".1f"),
)

PLOTS = {
    "extra_events": "events a removal adds",
    "extra_sealed_keys": "chain keys sealed for a removal",
    "extra_bytes": "bytes a removal adds (all nodes)",
    "extra_cpu_ms": "CPU ms a removal adds (all nodes)",
    "removal_wall_ms": "removal round wall time (ms)",
}


def _modes(text: str) -> tuple[str, ...]:
    values = tuple(ALIASES.get(v.strip(), v.strip()) for v in text.split(",") if v.strip())
    if not values or any(v not in MODES for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of "
                                         f"{', '.join(MODES)}")
    return tuple(dict.fromkeys(values))


def parse_args(argv: Sequence[str], prog: str) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="What removing one member costs a group of N (events, chain keys "
                    "sealed, bytes, CPU, wall time) until every remaining member can send in "
                    "the new epoch: a round with the removal minus a round without. All nodes "
                    "run in this process on 127.0.0.1. Method: docs/research.md.",
        epilog="Writes results.json, summary.csv, runs.csv, table.txt and PNG plots (with "
               "matplotlib) to --out.")
    parser.add_argument("--members", type=positive_ints, default=(4, 8, 16), metavar="N,N,...",
                        help="group sizes including the owner, at least 3 (default 4,8,16)")
    parser.add_argument("--mode", "--modes", dest="modes", type=_modes, default=MODES,
                        metavar="MODE,...", help="pairwise, sender-keys (default both)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="runs per (N, mode); the table shows median [min-max] (default 3)")
    parser.add_argument("--out", type=Path, help="default bench-results/rekey-<timestamp>/")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the data directories go (default: the system temp dir)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    if min(args.members) < 3:
        parser.error("--members: a group needs at least 3 members (one is removed)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    out = args.out or Path("bench-results") / f"rekey-{datetime.now():%Y%m%d-%H%M%S}"
    return Params(args.members, args.modes, args.repeat, out, args.tmp), not args.no_plots


def main(argv: Sequence[str] | None = None, prog: str = "kith bench rekey") -> int:
    params, plots = parse_args(list(sys.argv[1:] if argv is None else argv), prog)
    started, host = time.monotonic(), report.machine()
    runs = run_bench(run_all, params, prog)
    if runs is None:
        return 1
    rows = [asdict(r) for r in runs]
    report.publish(params.out, summary=report.summarise(rows, ("members", "mode"), METRICS,
                                                        order={"mode": MODES}),
                   runs=rows, keys=("members", "mode"), columns=COLUMNS,
                   header=f"rekey: one removal, median [min-max] of {params.repeat} run(s); "
                          f"{os.cpu_count()} CPU(s); + = removal round minus control round",
                   params=asdict(params), host=host, plots=PLOTS if plots else None,
                   title="rekey after one removal", seconds=time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m node.bench.rekey"))
