"""The shared benchmark output: summaries, tables, files and plots."""

from __future__ import annotations

import builtins
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from node.bench import report

RUNS = [
    {"members": 8, "mode": "b", "rate": 10.0, "cost": math.nan},
    {"members": 2, "mode": "b", "rate": 30.0, "cost": 1.0},
    {"members": 2, "mode": "a", "rate": 5.0, "cost": 2.0},
    {"members": 2, "mode": "b", "rate": 20.0, "cost": 3.0},
    {"members": 2, "mode": "b", "rate": 40.0, "cost": 2.0},
]
COLUMNS = (report.Column("rate", "rate/s", ".0f", span=True), report.Column("cost", "cost"))


def summary() -> list[report.Row]:
    return report.summarise(RUNS, ("members", "mode"), ("rate", "cost"),
                            order={"mode": ("b", "a")})


def test_summary_is_median_min_max_per_key_in_the_given_order() -> None:
    rows = summary()
    assert [(r["members"], r["mode"], r["runs"]) for r in rows] == [
        (2, "b", 3), (2, "a", 1), (8, "b", 1)]
    assert rows[0]["rate"] == {"median": 30.0, "min": 20.0, "max": 40.0}
    assert rows[0]["cost"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert math.isnan(rows[2]["cost"]["median"])  # a metric the run did not have


def test_table_and_markdown_show_medians_spans_and_gaps() -> None:
    text = report.table(summary(), ("members", "mode"), COLUMNS, "header line")
    lines = text.splitlines()
    assert lines[0] == "header line"
    assert lines[1].split() == ["members", "mode", "rate/s", "cost"]
    assert lines[3].split() == ["2", "b", "30", "[20-40]", "2.0"]
    assert lines[4].split() == ["2", "a", "5", "2.0"]  # one run: no span
    assert lines[5].split() == ["8", "b", "10", "-"]
    md = report.markdown(summary(), ("members", "mode"), COLUMNS).splitlines()
    assert md[0] == "| members | mode | rate/s | cost |"
    assert md[1] == "|---|---|--:|--:|"
    assert md[2] == "| 2 | b | 30 [20-40] | 2.0 |"


def test_results_directory_has_json_csv_and_table(tmp_path: Path) -> None:
    rows = summary()
    report.write_results(tmp_path / "out", params={"where": tmp_path}, runs=RUNS,
                         summary=rows, text="the table", host={"cpu_count": 2},
                         extra={"note": "x"})
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["params"] == {"where": str(tmp_path)}
    assert document["machine"] == {"cpu_count": 2}
    assert document["note"] == "x"
    assert document["runs"][0]["cost"] is None  # NaN is not JSON
    assert (tmp_path / "out" / "table.txt").read_text() == "the table\n"
    with (tmp_path / "out" / "summary.csv").open() as f:
        first = next(csv.DictReader(f))
    assert (first["mode"], first["rate_median"], first["rate_min"]) == ("b", "30.0", "20.0")
    with (tmp_path / "out" / "runs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(RUNS)


def test_plots_one_png_per_metric_with_data(tmp_path: Path) -> None:
    written = report.plot(tmp_path, summary(), {"rate": "rate per second", "cost": "cost"})
    assert [p.name for p in written] == ["rate.png", "cost.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    nothing = [{"members": 2, "mode": "a", "rate": {"median": math.nan, "min": math.nan,
                                                      "max": math.nan}}]
    assert report.plot(tmp_path / "empty", nothing, {"rate": "rate"}) == []


def test_without_matplotlib_plots_are_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    note = io.StringIO()
    assert report.plot(tmp_path, summary(), {"rate": "rate"}, note=note) == []
    assert "matplotlib is not installed" in note.getvalue()
    assert not list(tmp_path.glob("*.png"))


def test_progress_prints_a_line_per_step_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = report.Progress(2, "demo", out)
    progress.step("first")
    progress.step("second")
    assert out.getvalue() == "[1/2] demo: first\n[2/2] demo: second\n"
