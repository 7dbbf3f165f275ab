"""``kith bench catchup`` on a tiny run: every missed event arrives and the summary says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.bench import catchup
from node.cli.main import main

N = 300


def test_a_returning_node_catches_up_every_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["bench", "catchup", "--events", str(N), "--out", str(out),
                   "--tmp", str(tmp_path), "--no-plots"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    results = json.loads((out / "results.json").read_text())
    (row,) = results["summary"]
    assert (row["events"], row["mode"], row["runs"]) == (N, "private", 1)
    for key in catchup.METRICS:
        assert row[key]["median"] > 0, key
    (run,) = results["runs"]
    # The rate is the N events over the catch-up's own time.
    assert run["events_per_s"] == pytest.approx(N / run["catchup_s"])
    # Every event went over the wire: at least its signature and nonce each.
    assert run["bytes_per_event"] > 64 + 24
    assert "events/s" in printed.out


def test_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        catchup.parse_args(["--events", "0"], "kith bench catchup")
    with pytest.raises(SystemExit):
        catchup.parse_args(["--size", "4"], "kith bench catchup")
    assert "at least 8" in capsys.readouterr().err
