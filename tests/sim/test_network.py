"""The network model on tiny cases, against times computed by hand."""

from __future__ import annotations

import random

import pytest

from node.sim.clock import Scheduler
from node.sim.network import MSS, RTO_MIN, LinkSpec, Network

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


class ScriptedRandom(random.Random):
    """``random()`` returns the scripted values in turn (for loss decisions)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def network(*, latency: float = 0.002, bandwidth: float | None = 8e6, loss: float = 0.0,
            rng: random.Random | None = None) -> tuple[Network, list[tuple[float, bytes, str]]]:
    scheduler = Scheduler()
    net = Network(scheduler, rng or random.Random(1), link=LinkSpec(latency, loss),
                  bandwidth=bandwidth)
    got: list[tuple[float, bytes, str]] = []
    net.deliver = lambda dst, src, payload: got.append((scheduler.now, dst, payload))
    for node in (A, B, C):
        net.add(node)
    return net, got


def test_scheduler_runs_in_time_order_and_ties_in_queue_order() -> None:
    scheduler = Scheduler()
    seen: list[str] = []
    scheduler.at(2.0, seen.append, "late")
    scheduler.at(1.0, seen.append, "first")
    scheduler.at(1.0, seen.append, "second")
    scheduler.run()
    assert seen == ["first", "second", "late"]
    assert scheduler.now == 2.0
    with pytest.raises(ValueError):
        scheduler.at(1.0, seen.append, "past")


def test_uplink_serialises_copies_then_each_travels_the_latency() -> None:
    net, got = network()  # 8 Mbit/s: 1,000 bytes take 1 ms; latency 2 ms
    assert net.send(A, B, "to b", 1000, "message") == pytest.approx(0.003)
    assert net.send(A, C, "to c", 1000, "message") == pytest.approx(0.004)  # behind b's copy
    assert net.send(B, C, "b to c", 500, "message") == pytest.approx(0.0025)  # its own uplink
    net.scheduler.run()
    assert [(round(t, 6), p) for t, _, p in got] == [
        (0.0025, "b to c"), (0.003, "to b"), (0.004, "to c")]
    assert net.tally["message"].bytes == 2500 and net.tally["message"].messages == 3


def test_unlimited_bandwidth_leaves_only_latency() -> None:
    net, got = network(bandwidth=None, latency=0.005)
    net.send(A, B, "x", 10**6, "sync")
    net.scheduler.run()
    assert got == [(pytest.approx(0.005), B, "x")]


def test_a_lost_packet_waits_for_retransmission_and_holds_up_the_next_message() -> None:
    # Message 1 has two packets: the first gets through, the second is lost twice.
    # Message 2 (one packet) gets through at once but TCP delivers in order.
    rng = ScriptedRandom([0.9, 0.1, 0.1, 0.9, 0.9])
    net, got = network(bandwidth=None, latency=0.01, loss=0.5, rng=rng)
    rto = RTO_MIN + 2 * 0.01
    first = net.send(A, B, "one", MSS + 1, "message")
    second = net.send(A, B, "two", 100, "message")
    assert first == pytest.approx(0.01 + rto + 2 * rto)
    assert second == first
    net.scheduler.run()
    assert [p for _, _, p in got] == ["one", "two"]
    assert rng.values == []


def test_partition_refuses_sends_across_and_heal_announces_each_link_once() -> None:
    net, got = network()
    ups: list[tuple[bytes, bytes]] = []
    net.on_link_up = lambda a, b: ups.append((a, b))
    net.split({A: 0, B: 1, C: 1})
    assert net.send(A, B, "cut", 100, "message") is None
    assert net.send(B, C, "same side", 100, "message") is not None
    assert net.peers(A) == []
    net.heal()
    assert sorted(ups) == [(A, B), (A, C)]
    net.scheduler.run()
    assert [p for _, _, p in got] == ["same side"]
    assert "cut" not in [p for _, _, p in got] and net.tally["message"].messages == 1


def test_a_message_in_flight_is_lost_when_its_receiver_goes_offline() -> None:
    net, got = network()
    ups: list[tuple[bytes, bytes]] = []
    net.on_link_up = lambda a, b: ups.append((a, b))
    net.send(A, B, "in flight", 1000, "message")
    net.go_offline(B)
    assert net.send(A, B, "refused", 1000, "message") is None
    net.go_online(B)  # back before the first would have arrived: still a new connection
    assert ups == [(B, A), (B, C)]
    net.scheduler.run()
    assert got == [] and net.lost == 1


def test_a_nodes_cpu_prepares_each_copy_before_its_uplink_and_reads_each_arrival() -> None:
    # 8 Mbit/s (1,000 bytes: 1 ms), latency 2 ms, 0.5 ms of CPU per message sent or read.
    scheduler = Scheduler()
    net = Network(scheduler, random.Random(1), link=LinkSpec(0.002), bandwidth=8e6, cpu=0.0005)
    got: list[tuple[float, bytes, str]] = []
    net.deliver = lambda dst, src, payload: got.append((scheduler.now, dst, payload))
    for node in (A, B, C):
        net.add(node)
    net.watched.add(A)
    # Copy 1: CPU until 0.5 ms, wire until 1.5 ms; copy 2: CPU until 1 ms, then waits for the
    # uplink (1.5 ms), on the wire until 2.5 ms. Arrival = wire end + 2 ms latency.
    assert net.send(A, B, "one", 1000, "message") == pytest.approx(0.0035)
    assert net.send(A, C, "two", 1000, "message") == pytest.approx(0.0045)
    net.scheduler.run()
    # ... and each receiver's CPU reads it for 0.5 ms before the node sees it.
    assert [(round(t, 6), p) for t, _, p in got] == [(0.004, "one"), (0.005, "two")]
    assert net.cpu_busy == {A: pytest.approx(0.001), B: 0.0005, C: 0.0005}
    assert net.bytes_sent_by(A, ["message"]) == 2000
    assert net.bytes_sent_by(B, ["message"]) == 0  # not watched


def test_without_cpu_nothing_changes_and_negative_cpu_is_refused() -> None:
    net, _ = network()
    assert net.send(A, B, "x", 1000, "message") == pytest.approx(0.003)
    assert net.cpu_busy == {}
    with pytest.raises(ValueError):
        Network(Scheduler(), random.Random(1), cpu=-1.0)


def test_a_node_may_have_a_cpu_of_its_own_speed() -> None:
    scheduler = Scheduler()
    net = Network(scheduler, random.Random(1), link=LinkSpec(0.002), bandwidth=None)
    net.add(A)
    net.add(B)
    net.set_cpu(A, 0.001)  # only A's CPU costs anything
    assert net.send(A, B, "x", 100, "message") == pytest.approx(0.003)
    assert net.send(B, A, "y", 100, "message") == pytest.approx(0.002)
    scheduler.run()
    assert net.cpu_busy == {A: pytest.approx(0.002), B: 0.0}  # A sent x and read y
    with pytest.raises(ValueError):
        net.set_cpu(B, -0.1)
