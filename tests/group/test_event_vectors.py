"""Events and group ids against known answers written from docs/protocol.md.

The files under tests/vectors/kith/ come from make_vectors.py there, which follows the
document and shares no code with node/; round trips alone would let a silent format
change pass, these would not.
"""

from __future__ import annotations

import json
from typing import Any

import nacl.signing

from node.group.bodies import Rename, decode_body, encode_body, group_id_for
from node.group.events import Event, Kind, UnsignedEvent, decode_event
from node.ids import GroupId, PeerId
from tests.vectorfiles import vector_path


def _load(name: str) -> list[dict[str, Any]]:
    with vector_path(f"kith/{name}").open(encoding="utf-8") as f:
        vectors: list[dict[str, Any]] = json.load(f)["vectors"]
    return vectors


def _unsigned(v: dict[str, Any]) -> UnsignedEvent:
    return UnsignedEvent(
        GroupId(bytes.fromhex(v["group"])), PeerId(bytes.fromhex(v["author"])), v["seq"],
        v["epoch"], tuple((PeerId(bytes.fromhex(a)), s) for a, s in v["clock"]), v["lamport"],
        Kind(v["kind"]), bytes.fromhex(v["body"]),
    )


def test_group_ids() -> None:
    vectors = _load("group_id.json")
    assert len(vectors) == 3
    for v in vectors:
        gid = group_id_for(PeerId(bytes.fromhex(v["creator"])), bytes.fromhex(v["nonce"]))
        assert gid.hex() == v["group_id"]


def test_signing_bytes_encoding_and_event_id() -> None:
    vectors = _load("event.json")
    assert [v["name"] for v in vectors] == ["rename", "widths", "first"]
    for v in vectors:
        unsigned = _unsigned(v)
        assert unsigned.signing_bytes().hex() == v["signing_bytes"], v["name"]
        event = Event(unsigned, bytes.fromhex(v["signature"]))
        assert event.raw.hex() == v["encoded"], v["name"]
        assert event.id.hex() == v["event_id"], v["name"]


def test_the_encoded_events_decode_to_the_same_fields() -> None:
    for v in _load("event.json"):
        event = decode_event(bytes.fromhex(v["encoded"]))
        assert event.unsigned == _unsigned(v)
        assert event.signature.hex() == v["signature"]
        assert event.id.hex() == v["event_id"]


def test_the_signatures_are_the_authors() -> None:
    """The author is the public key of the seed, and the signature verifies over the
    signing bytes (Ed25519 is deterministic: the signature itself is a known answer)."""
    for v in _load("event.json"):
        key = nacl.signing.SigningKey(bytes.fromhex(v["seed"]))
        assert bytes(key.verify_key).hex() == v["author"]
        signing = bytes.fromhex(v["signing_bytes"])
        assert key.sign(signing).signature.hex() == v["signature"]
        key.verify_key.verify(signing, bytes.fromhex(v["signature"]))


def test_the_worked_example_body_is_a_rename() -> None:
    [rename] = [v for v in _load("event.json") if v["name"] == "rename"]
    body = bytes.fromhex(rename["body"])
    assert decode_body(Kind.RENAME, body) == Rename("Book club")
    assert encode_body(Rename("Book club")) == body
