"""Backoff and address parsing (the pure parts of the network drivers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.errors import ConfigError
from node.ids import format_peer_id
from node.net.address import DialTarget, parse_hostport
from node.net.backoff import Backoff


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0, 0.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5


@given(st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=0, max_value=200))
def test_backoff_jitter_stays_in_bounds(u: float, failures: int) -> None:
    b = Backoff(1.0, 30.0, 0.25, uniform=lambda lo, hi: lo + (hi - lo) * u)
    b.failures = failures
    delay = b.next_delay()
    assert 0.75 <= delay <= 30.0 * 1.25


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7373", ("127.0.0.1", 7373)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:80", ("::1", 80)),
        ("example.lan", ("example.lan", 7373)),
        ("::1", ("::1", 7373)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, default_port=7373) == expected


@pytest.mark.parametrize("text", ["host:port", "host:70000", ":80", "[::1]:x"])
def test_parse_hostport_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text, default_port=7373)


def test_dial_target_with_peer_id() -> None:
    key = IdentityKey.generate()
    target = DialTarget.parse(f"{format_peer_id(key.peer_id)}@10.0.0.2:9000", default_port=1)
    assert target == DialTarget("10.0.0.2", 9000, key.peer_id)
    assert str(target).endswith("@10.0.0.2:9000")
    with pytest.raises(ConfigError, match="checksum"):
        DialTarget.parse("a" * 56 + "@10.0.0.2:9000", default_port=1)
    with pytest.raises(ConfigError, match="port 0"):
        DialTarget.parse("10.0.0.2:0", default_port=1)
