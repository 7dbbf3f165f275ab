"""One process of ``kith bench scale``: several real nodes in one trio loop, driven by
JSON commands on stdin (one a line), answering with JSON lines on stdout.

    python -m node.bench.scale_host FIRST COUNT DATA_DIR

Hosts nodes FIRST .. FIRST+COUNT-1, node ``i`` listening on ``address(i)`` (its
own 127.77.x.y, an ephemeral port) with its own data directory, mDNS off and
the default timers (keepalives, the periodic vector exchange: idle cost is
what the benchmark measures). Each node says ``{"up": i, "peer", "listen"}``.

Links: node ``i`` keeps one channel to every node ``j < i`` up (so each pair
has one channel, as a real full mesh has after its duplicate-channel rule),
redialling when it drops. A *partition* (``cut``) gives every node a side:
each host closes its nodes' channels to the other side and the links across
the cut stop dialling until ``heal``; nothing else connects nodes (no mDNS,
no configured peers), so the two sides cannot hear each other, as on two
unconnected switches.

Every command carries an ``id``; the answer repeats it (``error`` when it
failed). ``node.bench.scale`` is the only user and documents the scenario.
"""

from __future__ import annotations

import cProfile
import hashlib
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.api.python import Kith, open_node
from node.bench.harness import emit, rss_mb
from node.errors import KithError
from node.group.events import GroupId
from node.group.member import Member
from node.ids import PeerId, format_peer_id, parse_peer_id
from node.net.address import DialTarget

#: Seconds a dialled channel has to be admitted before the link dials again.
ADMIT_TIMEOUT = 5.0
#: Handshakes one host runs at once. Every dial comes from 127.0.0.1, and a node lets one
#: source address hold only a quarter of its handshake slots: an unthrottled mesh of 64
#: refuses most of its first dials and spends the set-up retrying.
DIALS_AT_ONCE = 8


def address(index: int) -> str:
    """Node ``index``'s listening host: its own loopback address."""
    return f"127.77.{index // 250}.{1 + index % 250}"


def text(label: str, index: int, k: int, size: int) -> str:
    """The ``k``-th message node ``index`` sends in round ``label``, ``size`` characters."""
    return f"{label} n{index} m{k} ".ljust(size, "x")


class Host:
    def __init__(self, nodes: dict[int, Kith]) -> None:
        self.nodes = nodes
        self.peers: dict[int, tuple[str, PeerId]] = {}
        self.side: dict[int, int] = {}  # a partition: node -> side; empty when whole
        self.group_id: GroupId | None = None
        self.must_read: dict[int, set[str]] = {}
        self.must_not_read: dict[int, set[str]] = {}
        self._changed = trio.Event()
        self._counted: dict[int, tuple[Any, int]] = {}  # id(conn) -> (conn, bytes seen)
        self._profile: cProfile.Profile | None = None
        self._dialling = trio.Semaphore(DIALS_AT_ONCE)
        self._in_flight: set[tuple[int, int]] = set()  # links dialling now

    # -- links --

    def allowed(self, i: int, j: int) -> bool:
        return not self.side or self.side.get(i) == self.side.get(j)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def link(self, i: int, j: int) -> None:
        """Keep node ``i``'s channel to node ``j`` up while the partition allows it."""
        node = self.nodes[i].node
        listen, peer = self.peers[j]
        target = DialTarget.parse(listen, default_port=0)
        while True:
            while not self.allowed(i, j):
                await self._changed.wait()
            if peer not in node.connections:
                self._in_flight.add((i, j))
                try:
                    async with self._dialling:
                        await node.connect(target)
                except (KithError, OSError, trio.BrokenResourceError):
                    await trio.sleep(random.uniform(0.05, 0.5))
                    continue
                finally:
                    self._in_flight.discard((i, j))
                    self._notify()
                with trio.move_on_after(ADMIT_TIMEOUT):
                    await node.wait_until(lambda: peer in node.connections)
                if not self.allowed(i, j):  # cut while we were dialling
                    self._close(i, {peer})
                    continue
            await node.wait_until(lambda: peer not in node.connections)

    def _close(self, i: int, peers: set[PeerId]) -> None:
        self.count_bytes()
        for peer in peers:
            conn = self.nodes[i].node.connections.get(peer)
            if conn is not None:
                conn.close("partition")

    def count_bytes(self) -> int:
        """Bytes every channel of every node here has sent (closed ones as last seen)."""
        for kith in self.nodes.values():
            for conn in kith.node.connections.values():
                self._counted[id(conn)] = (conn, conn.stream.bytes_sent)
        return sum(seen for _, seen in self._counted.values())

    def _connected(self, i: int) -> bool:
        want = {peer for j, (_, peer) in self.peers.items() if j != i and self.allowed(i, j)}
        return want <= set(self.nodes[i].node.connections)

    # -- the group --

    def group(self, i: int) -> Member | None:
        assert self.group_id is not None
        return self.nodes[i].service.groups.get(self.group_id)

    def _has_members(self, i: int, members: set[PeerId]) -> bool:
        group = self.group(i)
        return group is not None and set(group.core.state.members) == members

    def _reads(self, i: int, texts: set[str]) -> bool:
        group = self.group(i)
        return group is not None and texts <= set(group.texts.values())

    def state(self, i: int) -> dict[str, Any]:
        group = self.group(i)
        if group is None:
            return {"events": "", "count": 0, "members": "", "missing": -1, "forbidden": 0}
        events = hashlib.sha256(b"".join(e.id for e in group.core.ordered_view()))
        members = hashlib.sha256(repr(sorted(
            (bytes(p), str(r)) for p, r in group.core.state.members.items())).encode())
        readable = set(group.texts.values())
        missing = sorted(self.must_read.get(i, set()) - readable)
        return {"missing_sample": [m.rstrip("x").strip() for m in missing[:3]],
                "events": events.hexdigest()[:16], "count": len(group.core.ordered_view()),
                "members": members.hexdigest()[:16],
                "missing": len(self.must_read.get(i, set()) - readable),
                "forbidden": len(self.must_not_read.get(i, set()) & readable)}

    async def _wait(self, nodes: list[int], check: Callable[[int], bool]) -> None:
        for i in nodes:
            await self.nodes[i].service.wait_until(partial(check, i))

    # -- commands --

    async def run(self, nursery: trio.Nursery, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        mine = [i for i in cmd.get("nodes", self.nodes) if i in self.nodes]
        if op == "peers":
            self.peers = {int(i): (listen, parse_peer_id(p)) for i, (listen, p)
                          in cmd["peers"].items()}
            links = [(i, j) for i in self.nodes for j in range(i)]
            random.shuffle(links)  # not every node dialling node 0 first
            for i, j in links:
                nursery.start_soon(self.link, i, j)
        elif op == "connected":
            for i in self.nodes:
                await self.nodes[i].node.wait_until(partial(self._connected, i))
        elif op == "create":
            group = self.nodes[cmd["node"]].service.create("scale", "private")
            self.group_id = group.id
            return {"group": group.id.hex()}
        elif op == "group":
            self.group_id = GroupId(bytes.fromhex(cmd["group"]))
        elif op in ("add", "remove"):
            service = self.nodes[cmd["node"]].service
            owned = self.group(cmd["node"])
            assert owned is not None
            for p in cmd["peers"]:
                (service.add if op == "add" else service.remove)(owned, parse_peer_id(p))
        elif op == "members":
            want = {parse_peer_id(p) for p in cmd["members"]}
            await self._wait(mine, lambda i: self._has_members(i, want))
        elif op == "send":
            for i in mine:
                member = self.group(i)
                assert member is not None
                for k in range(cmd["count"]):
                    self.nodes[i].service.send(member, text(cmd["label"], i, k, cmd["size"]))
                await trio.lowlevel.checkpoint()
        elif op == "read":
            texts = set(cmd["texts"])
            await self._wait(mine, lambda i: self._reads(i, texts))
        elif op == "expect":
            self.must_read = {int(i): set(t) for i, t in cmd["read"].items()}
            self.must_not_read = {int(i): set(t) for i, t in cmd["unread"].items()}
        elif op == "state":
            return {"states": {str(i): self.state(i) for i in mine}}
        elif op in ("cut", "heal"):
            self.side = {int(i): s for i, s in cmd.get("sides", {}).items()}
            self._notify()
            # A dial under way when the cut came would open a channel across it after the
            # closing below (at N = 100, channels dropped under load are being redialled).
            while any(not self.allowed(i, j) for i, j in self._in_flight):
                await self._changed.wait()
            for i in self.nodes:
                self._close(i, {peer for j, (_, peer) in self.peers.items()
                                if not self.allowed(i, j)})
        elif op == "crossing":  # channels across the cut (none while it holds)
            return {"crossing": sum(
                1 for i in self.nodes for j, (_, peer) in self.peers.items()
                if not self.allowed(i, j) and peer in self.nodes[i].node.connections)}
        elif op == "stats":
            return {"cpu": time.process_time(), "rss_mb": rss_mb(), "bytes": self.count_bytes()}
        elif op == "profile":
            if cmd["on"]:
                self._profile = cProfile.Profile(time.process_time)  # CPU, not waiting
                self._profile.enable()
            elif self._profile is not None:
                self._profile.disable()
                self._profile.dump_stats(Path(cmd["dir"]) / f"host-{min(self.nodes)}.prof")
                self._profile = None
        else:
            raise KithError(f"unknown command {op!r}")
        return {}


async def _answer(host: Host, nursery: trio.Nursery, cmd: dict[str, Any]) -> None:
    try:
        result = await host.run(nursery, cmd)
    except Exception as exc:  # the parent shows it and stops the run
        result = {"error": f"{type(exc).__name__}: {exc}"}
    emit(id=cmd["id"], **result)


async def serve(first: int, count: int, data: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # every node has N-1 channels
    async with AsyncExitStack() as stack:
        nodes: dict[int, Kith] = {}
        for i in range(first, first + count):
            nodes[i] = await stack.enter_async_context(open_node(
                data / f"n{i}", name=f"n{i}", listen=f"{address(i)}:0"))
            emit(up=i, peer=format_peer_id(nodes[i].node.peer_id), listen=nodes[i].listen)
        host = Host(nodes)
        async with trio.open_nursery() as nursery:
            async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
                pending = b""
                while data_in := await stdin.receive_some():
                    *lines, pending = (pending + data_in).split(b"\n")
                    for line in lines:
                        nursery.start_soon(_answer, host, nursery, json.loads(line))
            nursery.cancel_scope.cancel()  # stdin closed: the parent says stop


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: python -m node.bench.scale_host FIRST COUNT DATA_DIR\n")
        return 2
    trio.run(serve, int(argv[0]), int(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
