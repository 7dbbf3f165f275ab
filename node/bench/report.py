"""What every benchmark writes: a table, ``results.json``, CSVs and PNG plots.

A benchmark produces *runs*: flat dicts with key fields (say ``members`` and
``mode``) and numeric metrics. ``summarise`` groups them by the keys and keeps
the median, min and max of each metric over the repeats; ``table`` prints
that; ``write_results`` stores everything in one directory; ``plot`` draws one
PNG per metric against N with one line per mode (matplotlib is an optional
extra: without it the plots are skipped with a note, nothing else changes).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sqlite3
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: ``metric``'s median (and [min-max] when ``span``)."""

    metric: str
    title: str
    fmt: str = ".1f"
    span: bool = False


def machine() -> dict[str, Any]:
    """What the numbers were measured on (others' work on the machine skews them)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), "")
    return {"cpu_count": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "platform": platform.platform(),
            "trio": trio.__version__, "sqlite": sqlite3.sqlite_version,
            "load_average": os.getloadavg()}


def summarise(
    runs: Sequence[Mapping[str, Any]], keys: Sequence[str], metrics: Sequence[str],
    order: Mapping[str, Sequence[Any]] | None = None,
) -> list[Row]:
    """Per distinct key: ``runs`` and the median, min and max of every metric.

    ``order`` gives the order of a key's values (say the modes as given on the
    command line); other keys sort naturally. NaN values (a metric a mode does
    not have) are left out; a metric with no values at all is NaN.
    """
    def sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(list(order[k]).index(v) if order and k in order and v in order[k] else v
                     for k, v in zip(keys, key, strict=True))

    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows = []
    for key in sorted(groups, key=sort_key):
        mine = groups[key]
        row: Row = dict(zip(keys, key, strict=True)) | {"runs": len(mine)}
        for metric in metrics:
            values = [float(r[metric]) for r in mine
                      if r.get(metric) is not None and not math.isnan(float(r[metric]))]
            row[metric] = ({"median": statistics.median(values), "min": min(values),
                            "max": max(values)} if values else
                           {"median": math.nan, "min": math.nan, "max": math.nan})
        rows.append(row)
    return rows


def _cell(cell: Mapping[str, float], column: Column) -> str:
    if math.isnan(cell["median"]):
        return "-"
    text = f"{cell['median']:{column.fmt}}"
    if column.span and cell["min"] != cell["max"]:
        text += f" [{cell['min']:{column.fmt}}-{cell['max']:{column.fmt}}]"
    return text


def table(summary: Sequence[Row], keys: Sequence[str], columns: Sequence[Column],
          header: str = "") -> str:
    """A plain-text table: the keys, then each column's median [min-max]."""
    titles = [*keys, *(c.title for c in columns)]
    body = [[str(row[k]) for k in keys] + [_cell(row[c.metric], c) for c in columns]
            for row in summary]
    widths = [max(len(line[i]) for line in [titles, *body]) for i in range(len(titles))]

    def fmt(line: list[str]) -> str:
        cells = [cell.ljust(w) if i < len(keys) else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    lines = [header] if header else []
    lines += [fmt(titles), fmt(["-" * w for w in widths])] + [fmt(line) for line in body]
    return "\n".join(lines)


def markdown(summary: Sequence[Row], keys: Sequence[str], columns: Sequence[Column]) -> str:
    """The same table as Markdown (for docs/research.md)."""
    titles = [*keys, *(c.title for c in columns)]
    lines = ["| " + " | ".join(titles) + " |",
             "|" + "|".join("---" if i < len(keys) else "--:" for i in range(len(titles))) + "|"]
    for row in summary:
        cells = [str(row[k]) for k in keys] + [_cell(row[c.metric], c) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flat(row: Mapping[str, Any]) -> Row:
    """A summary row with ``metric_median``, ``metric_min``, ``metric_max`` columns."""
    return {k: v for k, v in row.items() if not isinstance(v, dict)} | {
        f"{k}_{stat}": x for k, v in row.items() if isinstance(v, dict) for stat, x in v.items()}


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_results(
    out: Path, *, params: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
    summary: Sequence[Row], text: str, host: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """``results.json`` (machine, parameters, summary, every run), ``runs.csv``,
    ``summary.csv`` and ``table.txt`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"machine": host if host is not None else machine(), "params": params,
                "summary": summary, "runs": runs} | dict(extra or {})
    (out / "results.json").write_text(json.dumps(_jsonable(document), indent=2) + "\n")
    (out / "table.txt").write_text(text + "\n")
    write_csv(out / "runs.csv", [dict(r) for r in runs])
    write_csv(out / "summary.csv", [flat(row) for row in summary])


def plot(
    out: Path, summary: Sequence[Row], metrics: Mapping[str, str], *,
    x: str = "members", line: str = "mode", title: str = "", log_x: bool = True,
    note: TextIO | None = None,
) -> list[Path]:
    """One PNG per metric (``metrics`` maps a metric to its axis label): the median
    against ``x`` with one line per value of ``line`` and the [min-max] as error
    bars. Returns the files written; without matplotlib, none (and says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        (note or sys.stderr).write("plots skipped: matplotlib is not installed "
                   "(pip install 'kith[plots]', or ./scripts/test's dev install has it)\n")
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    lines = list(dict.fromkeys(row[line] for row in summary))
    for metric, label in metrics.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        drawn = False
        for value in lines:
            rows = [r for r in summary if r[line] == value and not math.isnan(r[metric]["median"])]
            if not rows:
                continue
            xs = [r[x] for r in rows]
            ys = [r[metric]["median"] for r in rows]
            err = [[y - r[metric]["min"] for y, r in zip(ys, rows, strict=True)],
                   [r[metric]["max"] - y for y, r in zip(ys, rows, strict=True)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=str(value))
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.set_title(f"{title}: {label}" if title else label, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(title=line)
        fig.tight_layout()
        path = out / f"{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def publish(
    out: Path, *, summary: Sequence[Row], runs: Sequence[Mapping[str, Any]],
    keys: Sequence[str], columns: Sequence[Column], header: str, params: Mapping[str, Any],
    host: dict[str, Any], plots: Mapping[str, str] | None, title: str, seconds: float,
) -> str:
    """The end of every benchmark: print the table, write ``results.json`` (with the
    load average now and the table as Markdown), the CSVs, ``table.txt`` and, unless
    ``plots`` is None, the PNGs; say where on stderr. Returns the table."""
    text = table(summary, keys, columns, header)
    print(text)
    host["load_average_at_end"] = os.getloadavg()
    write_results(out, params=params, runs=runs, summary=summary, text=text, host=host,
                  extra={"markdown": markdown(summary, keys, columns)})
    if plots is not None:
        plot(out, summary, plots, title=title)
    sys.stderr.write(f"results in {out} ({seconds:.0f} s)\n")
    return text


class Progress:
    """A one-line progress bar on stderr (a plain line per step when not a terminal)."""

    def __init__(self, total: int, what: str, out: TextIO | None = None) -> None:
        self.total, self.what, self.done = total, what, 0
        self.out = out if out is not None else sys.stderr
        self._tty = self.out.isatty()

    def step(self, text: str) -> None:
        self.done += 1
        if self._tty:
            filled = round(20 * self.done / max(1, self.total))
            bar = "#" * filled + "." * (20 - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total} {self.what}: {text}\x1b[K")
            if self.done == self.total:
                self.out.write("\n")
        else:
            self.out.write(f"[{self.done}/{self.total}] {self.what}: {text}\n")
        self.out.flush()
