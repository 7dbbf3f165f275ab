"""The committed SENDER_KEY against known answers written from docs/protocol.md section 13.

tests/vectors/kith/sender_key.json comes from make_vectors.py there, which shares no code
with node/: it builds the payload, the salted commitment, the body and a sealed copy (a
crypto_box_seal with a chosen ephemeral key) on its own. node/ must open that copy, find
the same payload and commitment, and encode the same body and event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.crypto import sender_keys
from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import SenderKeyState
from node.errors import DecryptError
from node.group import keys as K
from node.group.bodies import SenderKey, decode_body, encode_body
from node.group.events import Kind, decode_event
from tests.vectorfiles import vector_path


def _file() -> dict[str, Any]:
    with vector_path("kith/sender_key.json").open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _h(v: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(v[key])


@pytest.mark.parametrize("v", _file()["vectors"], ids=lambda v: v["name"])
def test_a_recipient_opens_its_copy_and_checks_the_commitment(v: dict[str, Any]) -> None:
    identity = IdentityKey(_h(v, "recipient_seed"))
    assert identity.peer_id == _h(v, "recipient")
    assert identity.x25519_public == _h(v, "recipient_x25519_public")
    assert identity.x25519_private == _h(v, "recipient_x25519_secret")
    state = SenderKeyState(_h(v, "chain_key"), v["index"], _h(v, "sign"))
    assert sender_keys.encode_sealed_payload(state) == _h(v, "payload")
    assert sender_keys.commitment(state, _h(v, "salt")) == _h(v, "commit")
    body = SenderKey(v["epoch"], _h(v, "sign"), salt=_h(v, "salt"), commitment=_h(v, "commit"))
    assert encode_body(body) == _h(v, "body")
    assert decode_body(Kind.SENDER_KEY, _h(v, "body")) == body
    opened = K.open_distribution(identity, body, _h(v, "sealed"))
    assert opened == state
    other = IdentityKey(bytes(32))  # a copy is for its recipient only
    with pytest.raises(DecryptError, match="could not be opened"):
        K.open_distribution(other, body, _h(v, "sealed"))


def test_the_sender_key_event() -> None:
    data = _file()
    v, e = data["vectors"][0], data["event"]
    event = decode_event(_h(e, "encoded"))
    assert event.kind is Kind.SENDER_KEY and event.body == _h(v, "body")
    assert event.id.hex() == e["event_id"] and event.epoch == 0 and event.seq == 3
    assert event.unsigned.signing_bytes() == _h(e, "signing_bytes")
