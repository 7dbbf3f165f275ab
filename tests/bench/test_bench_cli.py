"""``kith bench``: picking the benchmark, and each one's help."""

from __future__ import annotations

import pytest

from node.cli.main import main


def test_bench_without_a_kind_lists_the_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for kind in ("fanout", "rekey", "sim"):
        assert f"  {kind}" in out
    assert main(["bench"]) == 2


def test_unknown_benchmark_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "speed"]) == 2
    assert "unknown benchmark 'speed'" in capsys.readouterr().err


def test_fanout_help_comes_from_the_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "fanout", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kith bench fanout")
    assert "--members" in out and "sender-keys" in out


def test_bad_fanout_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "fanout", "--members", "0"])
    assert exit_info.value.code == 2
    assert "positive integers" in capsys.readouterr().err
