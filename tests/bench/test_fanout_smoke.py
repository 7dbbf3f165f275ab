"""The fanout benchmark end to end at a tiny size: real receiver processes, every mode
(the relay modes with a real relay node in a process of its own)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from node.bench import fanout, harness, relay_fanout

MEMBERS = 2
MESSAGES = 5
SIZE = 64
MODES = (*fanout.DEFAULT_MODES, "relay", "relay-pairwise")


def test_tiny_run_reports_every_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status = fanout.main([
        "--members", str(MEMBERS), "--mode", "raw,pairwise,private,relay,relay-pairwise",
        "--messages", str(MESSAGES), "--size", str(SIZE), "--repeat", "1",
        "--out", str(out), "--tmp", str(tmp_path),
    ])
    printed = capsys.readouterr()
    assert status == 0, printed.err

    document = json.loads((out / "results.json").read_text())
    assert document["machine"]["cpu_count"] >= 1
    assert document["params"]["messages"] == MESSAGES
    rows = {(row["members"], row["mode"]): row for row in document["summary"]}
    assert set(rows) == {(MEMBERS, mode) for mode in MODES}
    for row in rows.values():
        assert row["runs"] == 1
        assert row["messages_per_s"]["median"] > 0
        assert row["cpu_ms_per_message"]["median"] > 0
        assert row["latency_p95_ms"]["median"] >= row["latency_p50_ms"]["median"] > 0
        assert row["latency_p99_ms"]["median"] >= row["latency_p95_ms"]["median"]
        assert row["peak_rss_mb"]["median"] > 1
        assert row["receiver_rss_mb"]["median"] > 1
        assert row["deliveries_per_s"]["median"] == pytest.approx(
            MEMBERS * row["messages_per_s"]["median"])
        assert row["last_member_ms"]["median"] >= row["latency_p50_ms"]["median"]
        relayed = row["mode"].startswith("relay")
        for metric in ("relay_cpu_ms_per_message", "relay_wire_bytes_per_message"):
            # the relay's own process: measured in the relay modes, absent in the others
            assert (row[metric]["median"] is not None and row[metric]["median"] > 0) == relayed

    def cost(mode: str, metric: str) -> float:
        return float(rows[(MEMBERS, mode)][metric]["median"])

    # Sender Keys: one encryption per message; pairwise: one per other member.
    assert cost("sender-keys", "encryptions_per_message") == 1
    assert cost("pairwise", "encryptions_per_message") == MEMBERS
    assert cost("sender-keys", "signatures_per_message") == 1
    assert cost("pairwise", "signatures_per_message") == 1
    assert cost("raw", "encryptions_per_message") == 0
    assert cost("raw", "bytes_per_message") == MEMBERS * (4 + SIZE)
    assert cost("raw", "wire_bytes_per_message") == MEMBERS * (4 + SIZE)
    # Every member gets a signed event carrying at least the ciphertext of the text.
    assert cost("sender-keys", "bytes_per_message") > MEMBERS * SIZE
    assert cost("pairwise", "bytes_per_message") > cost("sender-keys", "bytes_per_message")
    # On the wire each record also pays the channel's framing and tag (23 bytes); a burst
    # authored together shares records (one events message per member), so less per message.
    for mode in ("sender-keys", "pairwise"):
        assert cost(mode, "wire_bytes_per_message") > cost(mode, "bytes_per_message")
    assert rows[(MEMBERS, "raw")]["of_raw_rate"]["median"] == 1
    # Through the relay the author sends one copy: encrypted and signed as before (pairwise:
    # still one encryption per member), but its own application bytes are one copy's.
    assert cost("relay", "encryptions_per_message") == 1
    assert cost("relay-pairwise", "encryptions_per_message") == MEMBERS
    assert cost("relay", "signatures_per_message") == 1
    assert SIZE < cost("relay", "bytes_per_message") < cost("sender-keys", "bytes_per_message")
    assert cost("relay-pairwise", "bytes_per_message") > MEMBERS * SIZE

    assert len(document["runs"]) == len(MODES)
    with (out / "summary.csv").open() as f:
        assert {row["mode"] for row in csv.DictReader(f)} == set(MODES)
    assert (out / "runs.csv").exists()

    table = printed.out.splitlines()
    for mode in MODES:
        assert any(line.split()[:2] == [str(MEMBERS), mode] for line in table), printed.out
    assert any("CPU ms/msg" in line and "relay B/msg" in line for line in table)
    assert printed.err.count(f"N={MEMBERS} ") == len(MODES)  # progress per run
    # matplotlib is in the dev install: one PNG per plotted metric.
    assert {p.name for p in out.glob("*.png")} == {
        f"{m}.png" for m in fanout.PLOTS | relay_fanout.RELAY_PLOTS}


def test_receivers_are_spread_evenly_over_processes() -> None:
    assert harness.split(32, 4) == [(0, 8), (8, 8), (16, 8), (24, 8)]
    assert harness.split(5, 2) == [(0, 3), (3, 2)]
    assert harness.split(2, 4) == [(0, 1), (1, 1)]


def test_message_text_has_the_size_and_carries_its_index() -> None:
    text = harness.message_text(42, 256)
    assert len(text.encode()) == 256
    assert harness.message_index(text) == 42
    assert harness.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert harness.percentile([3.0, 1.0, 2.0, 4.0], 0.95) == 4.0


def test_modes_accept_aliases_and_reject_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    params, plots = fanout.parse_args(["--mode", "private,raw,sender-keys", "--no-plots"])
    assert params.modes == ("sender-keys", "raw")
    assert plots is False
    with pytest.raises(SystemExit):
        fanout.parse_args(["--mode", "carrier-pigeon"])
    assert "raw, pairwise, sender-keys, relay, relay-pairwise, libp2p" in capsys.readouterr().err


def test_a_bench_error_is_found_inside_trios_exception_groups() -> None:
    inner = harness.BenchError("receiver 3 fell behind")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("x"), inner])])
    assert harness.bench_error(nested) is inner
    assert harness.bench_error(ExceptionGroup("other", [ValueError("x")])) is None
    assert harness.bench_error(inner) is inner
