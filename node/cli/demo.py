"""``kith demo``: a small group on loopback goes through a network cut and converges.

Everything runs in this one process: N nodes on 127.0.0.1 (their own temporary
data directories, real TCP, real Noise, real SQLite), a private group, a short
conversation. Then one node goes offline and everybody, that node included,
keeps typing; it comes back, and the terminal shows each node's history
converging to the same ordered list, then a one-line verdict.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TextIO

import trio

from node.api.python import Kith, open_node

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
LINES = [
    "morning all, coffee is on", "who has the projector cable?", "I do, bringing it",
    "slides are in the usual place", "can we start at ten?", "ten works",
    "running five minutes late", "no rush",
]
OFFLINE_LINES = ["(typing on the train, no network)", "will this arrive?"]
ONLINE_LINES = ["we started without you", "notes are going around"]


def digest(log: list[dict[str, object]]) -> str:
    """A short fingerprint of an ordered history (equal lists, equal digests)."""
    ids = "".join(str(e["id"]) for e in log)
    return hashlib.blake2b(ids.encode(), digest_size=3).hexdigest()


class View:
    """One status line per step: every node's message count and history digest."""

    def __init__(self, nodes: Sequence[Kith], group: str, out: TextIO) -> None:
        self.nodes, self.group, self.out = nodes, group, out
        self.last: list[str] = []  # the cells of the row shown last

    def legend(self) -> None:
        print("Each row shows, per node, the messages it holds and a fingerprint of their "
              "order\n(6 hex digits of a hash of the ordered message ids: the same "
              "fingerprint on\nevery node means the same history in the same order).",
              file=self.out, flush=True)

    def logs(self) -> list[list[dict[str, object]]]:
        return [[e for e in n.log(self.group) if e["kind"] == "message"] for n in self.nodes]

    def show(self, label: str, *, changed_only: bool = False) -> None:
        """One row; with ``changed_only``, none if every node is where the last row was."""
        cells = []
        for node, log in zip(self.nodes, self.logs(), strict=True):
            state = f"{len(log):2d} msgs {digest(log)}"
            if node.node.offline:
                state += " (offline)"
            cells.append(f"{node.node.name}: {state}")
        if changed_only and cells == self.last:
            return
        self.last = cells
        print(f"  {label:<28} " + " | ".join(cells), file=self.out, flush=True)

    def converged(self) -> bool:
        logs = self.logs()
        return all([e["id"] for e in log] == [e["id"] for e in logs[0]] for log in logs) and all(
            e["text"] is not None for log in logs for e in log
        )


async def say(node: Kith, group: str, text: str, out: TextIO) -> None:
    node.send(group, text)
    print(f"    {node.node.name} > {text}", file=out, flush=True)
    await trio.sleep(0.15)  # a human pace, so the view has something to show


async def run_demo(count: int = 4, mode: str = "private", out: TextIO = sys.stdout,
                   base: Path | None = None, patience: float = 60.0) -> bool:
    """Run the demo; True if every node ends with the identical history."""
    with tempfile.TemporaryDirectory(prefix="kith-demo-") as tmp:
        root = base or Path(tmp)
        names = NAMES[:count]
        async with AsyncExitStack() as stack:
            print(f"Starting {count} nodes on 127.0.0.1 (data in {root})", file=out)
            nodes: list[Kith] = []
            for name in names:
                peers = [n.listen for n in nodes]
                nodes.append(await stack.enter_async_context(open_node(
                    root / name, name=name, peers=peers, receipt_interval=0.5)))
            with trio.fail_after(patience):
                for a in nodes:
                    for b in nodes:
                        if a is not b:
                            await a.wait_for_peer(b.peer_id)
            group = nodes[0].create_group("demo", mode=mode)
            for other in nodes[1:]:
                nodes[0].add(group, other.peer_id)
            with trio.fail_after(patience):
                for n in nodes:
                    await members_known(n, group, count)
            view = View(nodes, group, out)
            print(f"\n{names[0]} created a {mode} group and added everyone.\n", file=out)
            view.legend()
            print(file=out)
            for i, line in enumerate(LINES[:count + 2]):
                await say(nodes[i % count], group, line, out)
            await settle(view, patience)
            view.show("everyone online:")

            away = nodes[-1]
            print(f"\n{away.node.name} loses the network; everybody keeps typing.\n", file=out)
            away.node.set_offline(True)
            for line in OFFLINE_LINES:
                await say(away, group, line, out)
            for i, line in enumerate(ONLINE_LINES):
                await say(nodes[i % (count - 1)], group, line, out)
            view.show(f"{away.node.name} offline:")

            print(f"\n{away.node.name} is back.\n", file=out)
            away.node.set_offline(False)
            ok = await settle(view, patience)
            view.show("after reconnecting:")
            log = view.logs()[0]
            print("\nThe history every node shows:", file=out)
            for e in log:
                print(f"    {e['author_name']:>6}: {e['text']}", file=out)
            total = len(log)
            if ok:
                print(f"\nverdict: all {count} nodes hold the same {total} messages in the same "
                      "order (offline messages included): converged.", file=out)
            else:
                print(f"\nverdict: NOT converged within {patience:g} s", file=out)
            return ok


async def members_known(node: Kith, group: str, count: int) -> None:
    g = await node.group(group)
    await node.service.wait_until(lambda: len(g.core.state.members) == count)


async def settle(view: View, patience: float) -> bool:
    """Wait until every node shows the same readable history, refreshing the view."""
    with trio.move_on_after(patience):
        while not view.converged():
            view.show("converging...", changed_only=True)
            await trio.sleep(0.3)
        return True
    return False


def main(count: int, mode: str) -> int:
    return 0 if trio.run(run_demo, count, mode) else 1
