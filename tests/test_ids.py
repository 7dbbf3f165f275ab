from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import ConfigError
from node.ids import (
    PEER_ID_TEXT_LEN,
    PeerId,
    fingerprint,
    format_peer_id,
    parse_peer_id,
    peer_id,
    short_id,
)

keys = st.binary(min_size=32, max_size=32).map(peer_id)


@given(keys)
def test_text_form_round_trips(pid: PeerId) -> None:
    text = format_peer_id(pid)
    assert len(text) == PEER_ID_TEXT_LEN
    assert text == text.lower() and text.isalnum()
    assert parse_peer_id(text) == pid


@given(keys)
def test_parsing_forgives_case_spaces_and_dashes(pid: PeerId) -> None:
    text = format_peer_id(pid)
    messy = "-".join(text[i : i + 8] for i in range(0, len(text), 8)).upper()
    assert parse_peer_id(f"  {messy} ") == pid
    assert parse_peer_id(text.replace("o", "0").replace("l", "1").replace("b", "8")) == pid


def test_a_typo_is_caught() -> None:
    text = format_peer_id(peer_id(bytes(range(32))))
    caught = 0
    for i in range(len(text)):
        replacement = "a" if text[i] != "a" else "c"
        with pytest.raises(ConfigError, match=r"checksum|not a"):
            parse_peer_id(text[:i] + replacement + text[i + 1 :])
        caught += 1
    assert caught == len(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [("abc", "56 characters"), ("9" * 56, "only letters"), ("", "56 characters")],
)
def test_bad_text_has_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_peer_id(text)


def test_short_id_and_fingerprint_shapes() -> None:
    pid = peer_id(bytes(32))
    assert format_peer_id(pid).startswith(short_id(pid)) and len(short_id(pid)) == 8
    fp = fingerprint(pid)
    groups = fp.split(" ")
    assert len(groups) == 6 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert fingerprint(peer_id(bytes(31) + b"\x01")) != fp


def test_peer_id_requires_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        peer_id(b"short")
