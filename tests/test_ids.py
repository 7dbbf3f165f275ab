from __future__ import annotations

import base64
import json
from typing import Any

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
from tests.vectorfiles import vector_path

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


# -- known answers (tests/vectors/kith/peer_id.json, written from docs/protocol.md) --


def _peer_id_vectors() -> dict[str, Any]:
    with vector_path("kith/peer_id.json").open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def test_text_forms_match_the_known_answers() -> None:
    vectors = _peer_id_vectors()["vectors"]
    assert len(vectors) == 4
    for v in vectors:
        pid = peer_id(bytes.fromhex(v["public_key"]))
        text = format_peer_id(pid)
        assert text == v["text"]
        assert base64.b32decode(text.upper())[32:].hex() == v["checksum"]
        assert short_id(pid) == v["short_id"]
        assert fingerprint(pid) == v["fingerprint"]
        assert parse_peer_id(v["text"]) == pid


def test_forgiven_inputs_match_the_known_answers() -> None:
    data = _peer_id_vectors()
    expected = bytes.fromhex(data["vectors"][0]["public_key"])
    assert len(data["accepted"]) == 3
    for text in data["accepted"]:
        assert parse_peer_id(text) == expected


def test_refused_inputs_match_the_known_answers() -> None:
    refused = _peer_id_vectors()["refused"]
    messages = {"checksum": "checksum mismatch", "length": "56 characters",
                "alphabet": "only letters"}
    assert [r["reason"] for r in refused].count("checksum") == 3
    for r in refused:
        with pytest.raises(ConfigError, match=messages[r["reason"]]):
            parse_peer_id(r["text"])


def test_letters_that_only_fold_into_ascii_are_refused() -> None:
    """The Kelvin sign lower-cases to k and a long s upper-cases to S: neither is base32."""
    key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    text = format_peer_id(peer_id(key))
    for lookalike, letter in (("\u212a", "k"), ("\u017f", "s")):
        assert letter in text
        forged = text.replace(letter, lookalike, 1)
        assert forged != text and len(forged) == len(text)
        with pytest.raises(ConfigError, match="only letters"):
            parse_peer_id(forged)
