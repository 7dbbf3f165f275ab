"""``kith bench scale`` on a tiny group: real nodes in two processes converge after a join,
a removal and a partition, and the summary has every key the issue asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.bench import scale
from node.bench.scale_host import address, text
from node.cli.main import main

N = 5


def test_a_small_group_converges_through_churn_and_a_partition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["bench", "scale", "--members", str(N), "--procs", "2",
                   "--partition-seconds", "0.5", "--idle-seconds", "1", "--idle-after", "0.5",
                   "--timeout", "20",
                   "--out", str(out), "--tmp", str(tmp_path)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    results = json.loads((out / "results.json").read_text())
    (row,) = results["summary"]
    assert row["members"] == N and row["converged"] is True
    for key in ("convergence_s", "idle_cpu_percent", "rss_mb_per_node", "bytes_per_message",
                "cpu_ms_per_message"):
        assert row[key]["median"] > 0, key
    (run,) = results["runs"]
    # 4 first members, 1 joiner, 1 removed: round 1 by the 4, rounds 2-4 by the other 4.
    assert run["messages"] == 4 + 3 * 4
    assert "convergence s" in printed.out


def test_who_is_who_and_what_each_may_read() -> None:
    cast = scale.Cast(16)
    assert cast.joiners == [14, 15] and cast.removed == [12, 13]
    assert cast.remaining == [*range(12), 14, 15]
    params = scale.parse_args(["--members", "16"], "kith bench scale")
    read, unread = scale._expectations(cast, params)
    r1 = text("r1", 12, 0, params.size)  # a removed member's message from before
    r3 = text("r3", 14, 0, params.size)  # a joiner's message from after the removal
    assert r1 in read["0"] and r1 not in read["14"]  # joiners see nothing from before
    assert r3 in read["0"] and r3 in read["14"] and r3 in unread["12"]
    assert set(unread) == {"12", "13"}
    # Every node has its own loopback address.
    assert len({address(i) for i in range(300)}) == 300


def test_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        scale.parse_args(["--members", "3"], "kith bench scale")
    assert "at least 4" in capsys.readouterr().err
