"""``kith bench rekey`` on a tiny group: the accounting matches what the protocol says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.bench import rekey

N = 4


def test_removal_costs_what_the_protocol_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = rekey.main(["--members", str(N), "--repeat", "1", "--out", str(out),
                         "--tmp", str(tmp_path), "--no-plots"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    rows = {row["mode"]: row for row in json.loads((out / "results.json").read_text())["runs"]}
    assert set(rows) == {"pairwise", "sender-keys"}

    # Pairwise: the REMOVE is all; nothing is sealed, no key changes.
    assert rows["pairwise"]["extra_events"] == 1
    assert rows["pairwise"]["extra_sealed_keys"] == 0
    assert rows["pairwise"]["removal_sender_keys"] == 0
    # Sender Keys: the REMOVE, then each of the N - 1 remaining members rotates before its
    # next message, sealing its new chain key to the N - 2 others.
    keys = rows["sender-keys"]
    assert keys["extra_events"] == 1 + (N - 1)
    assert keys["removal_sender_keys"] == N - 1
    assert keys["extra_sealed_keys"] == (N - 1) * (N - 2)
    assert keys["removal_events"] == 1 + 2 * (N - 1)  # REMOVE, keys, one message each
    for row in rows.values():
        assert row["removal_bytes"] > 0
        assert row["removal_cpu_ms"] > 0
    # The new keys cost bytes on the wire that the pairwise removal does not.
    assert keys["extra_bytes"] > rows["pairwise"]["extra_bytes"]
    assert "+sealed keys" in printed.out


def test_a_group_of_two_cannot_lose_a_member(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        rekey.parse_args(["--members", "2"], "kith bench rekey")
    assert "at least 3 members" in capsys.readouterr().err
