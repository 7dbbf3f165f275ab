"""The relay process of ``kith bench fanout --mode relay``: its command line and arithmetic
(the smoke test, tests/bench/test_fanout_smoke.py, runs it for real)."""

from __future__ import annotations

import math

import pytest

from node.bench import fanout, relay_fanout
from node.bench.harness import BenchError


def test_the_relay_pays_the_difference_between_two_marks() -> None:
    before = {"mark": 0, "cpu": 1.5, "sent": 1000, "received": 10, "links": 3, "fanned": 1}
    after = {"mark": 1, "cpu": 2.0, "sent": 51000, "received": 99, "links": 3, "fanned": 101}
    costs = relay_fanout.relay_costs(before, after, 100)
    assert costs == {"relay_cpu_ms_per_message": pytest.approx(5.0),
                     "relay_wire_bytes_per_message": 500.0}
    assert all(math.isnan(v) for v in relay_fanout.relay_costs(before, after, 0).values())


def test_a_run_the_relay_did_not_push_on_is_refused() -> None:
    # The author fell back to client-side fanout for some of the run: not a relay run.
    before = {"mark": 0, "cpu": 1.5, "sent": 1000, "received": 10, "links": 3, "fanned": 1}
    after = {"mark": 1, "cpu": 2.0, "sent": 1000, "received": 99, "links": 3, "fanned": 100}
    with pytest.raises(BenchError, match="pushed on 99 of the 100 timed messages"):
        relay_fanout.relay_costs(before, after, 100)


def test_a_bad_command_line_is_a_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert relay_fanout.main(["relay"]) == 2
    assert relay_fanout.main(["receiver", "x", "1"]) == 2
    assert capsys.readouterr().err.count("usage: python -m node.bench.relay_fanout") == 2


def test_relay_modes_are_modes_of_their_own_with_the_relays_columns() -> None:
    params, _ = fanout.parse_args(["--mode", "relay,relay_pairwise,private", "--no-plots"])
    assert params.modes == ("relay", "relay-pairwise", "sender-keys")
    assert relay_fanout.RELAY_GROUP_MODE == {"relay": "private", "relay-pairwise": "pairwise"}
    titles = [c.title for c in fanout.columns(params)]
    assert "relay CPU ms/msg" in titles and "relay B/msg" in titles and "last ms" in titles
    assert set(fanout.plots(params)) == set(fanout.PLOTS) | set(relay_fanout.RELAY_PLOTS)
    plain, _ = fanout.parse_args(["--mode", "raw,sender-keys"])
    assert "relay B/msg" not in [c.title for c in fanout.columns(plain)]
    assert set(fanout.plots(plain)) == set(fanout.PLOTS)


def test_interval_spreads_the_sends_and_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    params, _ = fanout.parse_args(["--interval-ms", "50"])
    assert isinstance(params, fanout.FanoutParams) and params.interval == 0.05
    assert "50 ms apart" in fanout.header(params)
    assert fanout.parse_args([])[0].interval == 0.0  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        fanout.parse_args(["--interval-ms", "-1"])
    assert "--interval-ms must be at least 0" in capsys.readouterr().err
