"""The log limiter: one line per key per interval, counts of what was held back, bounded keys."""

from __future__ import annotations

import logging

import pytest

from node.logs import LogLimiter, RateLimitedLog, clip


def test_one_line_per_key_per_interval_and_the_count_of_held_back_lines() -> None:
    limiter = LogLimiter(interval=10.0)
    assert limiter.check(("p", "bad"), 0.0) == 0
    assert [limiter.check(("p", "bad"), t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert limiter.check(("q", "bad"), 3.0) == 0  # another key is not held back
    assert limiter.check(("p", "bad"), 10.0) == 3
    assert limiter.check(("p", "bad"), 10.5) is None


def test_keys_are_bounded_oldest_forgotten_first() -> None:
    limiter = LogLimiter(interval=10.0, max_keys=3)
    for i in range(100):
        limiter.check(i, 0.0)
    assert len(limiter) == 3
    assert limiter.check(0, 1.0) == 0  # forgotten, so logged again
    assert limiter.check(99, 1.0) is None


def test_clip_escapes_control_characters_and_bounds_length() -> None:
    assert clip("fine") == "fine"
    assert clip("a\nb\x1b[2J") == "a\\x0ab\\x1b[2J"
    long = "x" * 65_000
    out = clip(long, 200)
    assert out.startswith("x" * 200) and out.endswith("(64800 more characters)")
    assert len(out) < 250


def test_rate_limited_log_reports_the_count(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(logging.getLogger("kith.test.logs"), interval=3600.0)
    caplog.set_level(logging.WARNING, "kith.test.logs")
    key = ("peer", "malformed")
    logged = [rl.warning(key, "malformed message from %s", "peer") for _ in range(500)]
    assert logged.count(True) == 1
    assert len(caplog.records) == 1
    rl.limiter._keys[("peer", "malformed")][0] = -1e9  # the window has passed
    assert rl.warning(("peer", "malformed"), "malformed message from %s", "peer")
    assert caplog.records[-1].getMessage() == "malformed message from peer (and 499 more like it)"
