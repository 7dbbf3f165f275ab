"""The simulated network: uplink bandwidth, per-link latency and loss, partitions, offline nodes.

Theory of operation
-------------------
Kith runs full-mesh TCP channels on a LAN, so the model is a set of
point-to-point links between nodes, each a reliable in-order byte stream:

* **Uplink.** Every node has one uplink of ``bandwidth`` bits per second
  (``None``: unlimited), shared by all its links and served first come,
  first served: a message of S bytes occupies the sender's uplink for
  ``8 S / bandwidth`` seconds after everything queued before it. With
  client-side fanout this is where the author's cost shows: N copies queue
  one behind the other.
* **Latency.** Then the message travels its link's one-way ``latency``.
* **Loss** is per packet (``MSS`` bytes of payload each), as TCP sees it: a
  lost packet is retransmitted after a timeout ``RTO = RTO_MIN + 2 x latency``,
  doubling for each further loss of the same packet, so loss delays a message
  and never drops it. A link delivers in order (a delayed message holds up
  the ones behind it on the same link, as TCP's head-of-line blocking does).
* **Reachability.** A link is up while both ends are online and on the same
  side of the partition. Nothing is sent over a link that is down (a real node
  has no channel then), and a message in flight when its link went down is
  lost with the connection. When a link comes up again, ``on_link_up`` is
  called for it (the node reconnects: outbox flush and sync).

* **CPU** (optional, ``cpu`` seconds per message, 0 by default): each node
  has one CPU that spends ``cpu`` on every message it sends (before the copy
  reaches its uplink: framing, channel encryption, the syscall) and on every
  message it receives (before the node sees it: decryption, parsing), first
  come, first served. CPU and uplink form a two-stage pipeline: copy k + 1 is
  prepared while copy k is on the wire. With client-side fanout the author's
  CPU then pays N per message, as on a real node (``kith bench fanout``
  measures what one copy costs there).

Bytes are counted per kind (live events, sync, acks, vectors...) when a message
is handed to the uplink: the application bytes, as the real node's counters
count them (no channel framing, TCP or IP headers, no retransmitted bytes).
For the nodes in ``watched`` they are also counted per (source, kind), so a
run can say what the author and a relay each put on the wire.

All randomness (loss) comes from the ``random.Random`` given, so the same seed
gives the same arrival times.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from node.ids import PeerId
from node.sim.clock import Scheduler

Addr = PeerId  # any hashable name would do; members are named by their peer id
MSS = 1460
RTO_MIN = 0.2


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One link's one-way latency (seconds) and per-packet loss probability (0 <= loss < 1)."""

    latency: float = 0.001
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError("latency must be at least 0")
        if not 0 <= self.loss < 1:
            raise ValueError("loss must be in [0, 1)")


@dataclass(slots=True)
class Tally:
    """Messages and bytes put on the wire for one kind of traffic."""

    messages: int = 0
    bytes: int = 0


Deliver = Callable[[Addr, Addr, Any], None]  # (destination, source, payload)
LinkUp = Callable[[Addr, Addr], None]


class Network:
    def __init__(
        self, scheduler: Scheduler, rng: random.Random, *, link: LinkSpec = LinkSpec(),
        bandwidth: float | None = None, cpu: float = 0.0,
    ) -> None:
        if cpu < 0:
            raise ValueError("cpu must be at least 0")
        self.scheduler = scheduler
        self.rng = rng
        self.default = link
        self.bandwidth = bandwidth  # bits per second of every uplink, None: unlimited
        self.deliver: Deliver = lambda dst, src, payload: None
        self.on_link_up: LinkUp = lambda a, b: None
        self.nodes: list[Addr] = []
        self.online: set[Addr] = set()
        self.side: dict[Addr, int] = {}
        self.tally: dict[str, Tally] = {}
        self.cpu = cpu  # seconds of a node's CPU per message sent or received (0: free)
        #: Nodes whose bytes are also counted per (source, kind) in ``sent_by``.
        self.watched: set[Addr] = set()
        self.sent_by: dict[tuple[Addr, str], Tally] = {}
        self.cpu_busy: dict[Addr, float] = {}  # CPU seconds each node spent on messages
        self.lost = 0  # messages lost because their link went down in flight
        self._links: dict[tuple[Addr, Addr], LinkSpec] = {}
        self._uplinks: dict[Addr, float | None] = {}
        self._uplink_free: dict[Addr, float] = {}
        self._cpu_free: dict[Addr, float] = {}
        self._cpus: dict[Addr, float] = {}  # nodes with a CPU of their own speed
        self._last_arrival: dict[tuple[Addr, Addr], float] = {}
        self._down_count: dict[Addr, int] = {}  # times a node went offline
        self._partitions = 0  # times the partition changed

    # -- topology --

    def add(self, node: Addr, *, online: bool = True) -> None:
        self.nodes.append(node)
        self.side[node] = 0
        self._down_count[node] = 0
        if online:
            self.online.add(node)

    def set_link(self, a: Addr, b: Addr, spec: LinkSpec) -> None:
        """Give the link between ``a`` and ``b`` (both directions) its own latency and loss."""
        self._links[(a, b)] = self._links[(b, a)] = spec

    def set_uplink(self, node: Addr, bandwidth: float | None) -> None:
        self._uplinks[node] = bandwidth

    def set_cpu(self, node: Addr, cpu: float) -> None:
        """Give ``node`` a CPU of its own speed: ``cpu`` seconds per message."""
        if cpu < 0:
            raise ValueError("cpu must be at least 0")
        self._cpus[node] = cpu

    def link(self, a: Addr, b: Addr) -> LinkSpec:
        return self._links.get((a, b), self.default)

    def connected(self, a: Addr, b: Addr) -> bool:
        return a in self.online and b in self.online and self.side[a] == self.side[b]

    def peers(self, node: Addr) -> list[Addr]:
        """The nodes ``node`` has a link up to (in the order they were added)."""
        return [n for n in self.nodes if n != node and self.connected(node, n)]

    def go_offline(self, node: Addr) -> None:
        if node in self.online:
            self.online.discard(node)
            self._down_count[node] += 1

    def go_online(self, node: Addr) -> None:
        if node in self.online:
            return
        self.online.add(node)
        for other in self.peers(node):
            self.on_link_up(node, other)

    def split(self, sides: dict[Addr, int]) -> None:
        """Cut the network: nodes on different sides cannot reach each other."""
        self._partitions += 1
        for node, side in sides.items():
            self.side[node] = side

    def heal(self) -> None:
        """Everyone on one side again; every link that comes up is announced."""
        before = dict(self.side)
        self._partitions += 1
        for node in self.side:
            self.side[node] = 0
        up = [n for n in self.nodes if n in self.online]
        for i, a in enumerate(up):
            for b in up[i + 1:]:
                if before[a] != before[b]:
                    self.on_link_up(a, b)

    # -- sending --

    def send(self, src: Addr, dst: Addr, payload: Any, size: int, kind: str) -> float | None:
        """Queue ``size`` bytes on ``src``'s uplink to ``dst``; the arrival time, or None
        if the link is down (nothing is sent)."""
        if not self.connected(src, dst):
            return None
        tally = self.tally.setdefault(kind, Tally())
        tally.messages += 1
        tally.bytes += size
        if src in self.watched:
            mine = self.sent_by.setdefault((src, kind), Tally())
            mine.messages += 1
            mine.bytes += size
        now = self.scheduler.now
        ready = self._use_cpu(src, now) if self.cpu or self._cpus else now
        bandwidth = self._uplinks.get(src, self.bandwidth)
        start = max(ready, self._uplink_free.get(src, 0.0))
        done = start + (8 * size / bandwidth if bandwidth else 0.0)
        self._uplink_free[src] = done
        spec = self.link(src, dst)
        arrival = done + spec.latency + self._retransmission_delay(size, spec)
        arrival = max(arrival, self._last_arrival.get((src, dst), 0.0))  # in order per link
        self._last_arrival[(src, dst)] = arrival
        state = (self._down_count[src], self._down_count[dst], self._partitions)
        self.scheduler.at(arrival, self._arrive, src, dst, payload, state)
        return arrival

    def _retransmission_delay(self, size: int, spec: LinkSpec) -> float:
        """Extra time until every packet of the message got through (0 without loss)."""
        if spec.loss <= 0:
            return 0.0
        rto = RTO_MIN + 2 * spec.latency
        worst = 0.0
        for _ in range(max(1, math.ceil(size / MSS))):
            delay, timeout = 0.0, rto
            while self.rng.random() < spec.loss:
                delay += timeout
                timeout *= 2
            worst = max(worst, delay)
        return worst

    def _arrive(self, src: Addr, dst: Addr, payload: Any, state: tuple[int, int, int]) -> None:
        down_src, down_dst, partitions = state
        if (self._down_count[src] != down_src or self._down_count[dst] != down_dst
                or (partitions != self._partitions and not self.connected(src, dst))):
            self.lost += 1  # the connection broke while the message was in flight
            return
        if self.cpu or self._cpus:  # the receiver's CPU reads it once it is free
            self.scheduler.at(self._use_cpu(dst, self.scheduler.now), self.deliver, dst, src,
                              payload)
            return
        self.deliver(dst, src, payload)

    def _use_cpu(self, node: Addr, now: float) -> float:
        """Queue ``cpu`` seconds of work on ``node``'s CPU; when it is done."""
        cost = self._cpus.get(node, self.cpu)
        done = max(now, self._cpu_free.get(node, 0.0)) + cost
        self._cpu_free[node] = done
        self.cpu_busy[node] = self.cpu_busy.get(node, 0.0) + cost
        return done

    def bytes_of(self, kinds: Iterable[str]) -> int:
        return sum(self.tally[k].bytes for k in kinds if k in self.tally)

    def bytes_sent_by(self, node: Addr, kinds: Iterable[str]) -> int:
        """Bytes ``node`` (one of ``watched``) put on the wire for these kinds."""
        return sum(self.sent_by[(node, k)].bytes for k in kinds if (node, k) in self.sent_by)
