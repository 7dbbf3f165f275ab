"""``kith bench sim --mode relay,relay-pairwise``: server-side fanout in the simulator.

Correctness only: who sends what to whom, that everyone reads everything, that the
relay reads nothing, and the simulated times worked out by hand (simulated time is a
function of the seed, not of this machine).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from node.bench import sim as sim_cli
from node.sim.metrics import MEASURED, measure
from node.sim.runner import Simulation
from node.sim.scenario import Scenario

MESSAGES = 3


def run(n: int, mode: str, **kw: Any) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(Scenario(n, mode, messages=MESSAGES, size=256, **kw))
    sim.run()
    return sim, measure(sim)


@pytest.mark.parametrize("n", [2, 5])
def test_the_author_sends_one_copy_and_the_relay_pushes_what_client_side_would(n: int) -> None:
    client_sim, client = run(n, "sender-keys")
    relay_sim, relay = run(n, "relay")
    assert relay_sim.relay is not None and client_sim.relay is None
    author, hub = relay_sim.authors[0], relay_sim.relay.me
    # Same seed, same group: the relay modes change the fanout, not the members.
    assert relay_sim.order == client_sim.order and hub not in relay_sim.order
    # One flagged copy per message from the author, to the relay only...
    to_relay = relay_sim.net.sent_by[(author, "message")]
    assert to_relay.messages == MESSAGES
    assert relay["author_bytes_per_message"] == to_relay.bytes / MESSAGES
    assert relay["author_bytes_per_message"] < client["author_bytes_per_message"] / n * 1.1
    # ... and the relay puts on the wire exactly the copies the author would have.
    assert relay_sim.net.sent_by[(hub, "message")].messages == n * MESSAGES
    assert relay["relay_bytes_per_message"] == client["author_bytes_per_message"]
    assert relay["bytes_per_message"] == (relay["author_bytes_per_message"]
                                          + relay["relay_bytes_per_message"])
    # Every member read every message, checking each signature once; the author still
    # encrypts and signs once.
    assert relay["undelivered"] == 0 and relay["rejected"] == 0
    assert relay["verifications_per_message"] == n
    assert relay["encryptions_per_message"] == relay["signatures_per_message"] == 1
    assert relay_sim.converged()
    assert relay["relay_cpu_ms_per_message"] > 0
    assert math.isnan(client["relay_cpu_ms_per_message"])
    assert math.isnan(client["relay_bytes_per_message"])
    # The relay holds the group's log but reads nothing.
    core = relay_sim.relay.m
    assert not relay_sim.relay.read_at and not core.contents
    assert [e.id for e in core.core.ordered()] == [
        e.id for e in relay_sim.members[author].core.ordered()]


def test_pairwise_through_the_relay_carries_every_members_copy_once() -> None:
    n = 4
    _, client = run(n, "pairwise")
    relay_sim, relay = run(n, "relay-pairwise")
    assert relay_sim.relay is not None
    assert relay["encryptions_per_message"] == n  # the author still encrypts per member
    assert relay["relay_bytes_per_message"] == client["author_bytes_per_message"]
    # one event plus n addressed copies, against n events with a copy each
    assert relay["author_bytes_per_message"] < client["author_bytes_per_message"]
    assert relay["undelivered"] == 0 and relay_sim.converged()
    assert not relay_sim.relay.read_at
    # each member's copy reached it: every member read every message
    for pid in relay_sim.current_members():
        if pid != relay_sim.authors[0]:
            assert len(relay_sim.members[pid].read_at) == MESSAGES


def test_through_the_relay_a_message_takes_two_hops() -> None:
    # Unlimited bandwidth, 10 ms per hop: client-side 10 ms, through the relay 20 ms.
    _, client = run(5, "sender-keys", latency=0.01, bandwidth=None)
    _, relay = run(5, "relay", latency=0.01, bandwidth=None)
    assert client["last_member_ms"] == pytest.approx(10.0)
    assert relay["last_member_ms"] == pytest.approx(20.0)
    assert relay["latency_p50_ms"] == pytest.approx(20.0)


def test_a_faster_relay_uplink_overtakes_the_authors_when_the_group_is_large() -> None:
    # 8 Mbit/s uplinks, 1 ms latency, one message: client-side queues N copies on the
    # author's uplink; the relay's uplink is 10x faster, so past some N it wins.
    kw: dict[str, Any] = {"latency": 0.001, "bandwidth": 8e6, "messages": 1}
    small = [measure(_ran(Scenario(2, mode, **kw))) for mode in ("sender-keys", "relay")]
    large = [measure(_ran(Scenario(50, mode, relay_bandwidth=80e6, **kw)))
             for mode in ("sender-keys", "relay")]
    assert small[0]["last_member_ms"] < small[1]["last_member_ms"]
    assert large[1]["last_member_ms"] < large[0]["last_member_ms"]


def test_with_a_cpu_per_message_the_author_pays_per_copy_and_the_relay_for_it() -> None:
    cpu = 0.0001
    client_sim, client = run(5, "sender-keys", cpu=cpu)
    relay_sim, relay = run(5, "relay", cpu=cpu, relay_cpu=cpu / 10)
    assert relay_sim.relay is not None
    # client-side: 5 copies out per message, and the members' (cumulative) acknowledgements
    assert client["author_cpu_busy_ms_per_message"] > 5 * cpu * 1000
    assert relay["author_cpu_busy_ms_per_message"] < client["author_cpu_busy_ms_per_message"]
    # the relay handles the copies the author would have, on a CPU 10x faster
    relay_busy = relay_sim.net.cpu_busy[relay_sim.relay.me]
    assert 0 < relay_busy < client_sim.net.cpu_busy[client_sim.authors[0]]
    assert relay["undelivered"] == 0 and client["undelivered"] == 0


def test_offline_members_catch_up_with_a_relay_in_the_group() -> None:
    sim, r = run(6, "relay", offline=0.4)
    assert sim.offline and r["undelivered"] == 0 and sim.converged()
    assert r["convergence_s"] >= 0


def test_same_seed_same_relay_results() -> None:
    def deterministic() -> dict[str, Any]:
        _, row = run(4, "relay-pairwise", loss=0.1, seed=3)
        return {k: v for k, v in row.items()
                if k not in MEASURED and not (isinstance(v, float) and math.isnan(v))}

    assert deterministic() == deterministic()


def test_the_cli_shows_who_pays_and_plots_both_strategies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = sim_cli.main(["--members", "2,4", "--mode", "sender-keys,relay,relay-pairwise",
                           "--messages", "2", "--size", "64", "--cpu-us", "20",
                           "--relay-mbps", "1000", "--out", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "relay B/msg" in printed.out and "author B/msg" in printed.out
    assert "sim CPU ms/msg" in printed.out and "the relay's 1000" in printed.out
    document = json.loads((out / "results.json").read_text())
    rows = {(row["members"], row["mode"]): row for row in document["summary"]}
    assert set(rows) == {(n, m) for n in (2, 4) for m in ("sender-keys", "relay",
                                                           "relay-pairwise")}
    assert rows[(4, "relay")]["relay_bytes_per_message"]["median"] > 0
    assert rows[(4, "sender-keys")]["relay_bytes_per_message"]["median"] is None
    for metric in sim_cli.RELAY_PLOTS:
        assert (out / f"{metric}.png").exists()
    assert sim_cli.main(["--members", "2", "--relay-mbps", "-1"]) == 2


def _ran(scenario: Scenario) -> Simulation:
    sim = Simulation(scenario)
    sim.run()
    return sim


def test_the_envelope_through_the_relay_is_a_members_copy() -> None:
    _, client = run(5, "sender-keys")
    _, relay = run(5, "relay")
    assert relay["envelope_bytes_per_event"] == client["envelope_bytes_per_event"]
