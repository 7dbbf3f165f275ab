"""The committed SENDER_KEY and a nonce-free MESSAGE against known answers written from
docs/protocol.md sections 13 and 14 (the compact ``evc`` form).

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
from node.group.bodies import PrivateMessage, SenderKey, decode_body, encode_body
from node.group.events import EventError, Kind, decode_event
from node.wire.messages import EventsMessage, decode_message, encode_message
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


def test_the_nonce_free_message_and_its_compact_event() -> None:
    data = _file()
    v, m, e, w = data["vectors"][0], data["message"], data["message_event"], data["events_message"]
    ck = _h(v, "chain_key")
    assert sender_keys.message_key(ck) == _h(m, "message_key")
    assert sender_keys.next_chain_key(ck) == _h(m, "next_chain_key")
    event = decode_event(_h(e, "encoded"))
    assert event.kind is Kind.MESSAGE and event.body == _h(m, "body")
    ad = K.private_ad(event.group, event.author, event.epoch, m["index"])
    assert ad == _h(m, "ad")
    # node encrypts the same bytes: a fixed nonce, the documented key
    own = sender_keys.OwnSenderKey(chain_key=ck, index=0, signing_seed=b"\x07" * 32,
                                   fresh=True)
    _, used, blob = sender_keys.encrypt(own, _h(m, "plaintext"), ad)
    body = decode_body(Kind.MESSAGE, _h(m, "body"))
    assert isinstance(body, PrivateMessage) and body.index == used == 0
    assert encode_body(PrivateMessage(used, blob)) == _h(m, "body")
    state = SenderKeyState(ck, 0, own.signing_public)
    _, plaintext = sender_keys.decrypt(state, body.index, body.ciphertext, ad)
    assert plaintext == _h(m, "plaintext")
    assert sender_keys.verify(own.signing_public, event.unsigned.signing_bytes(), event.signature)
    # on the wire, without its group; the receiver rebuilds the same event and id
    message = EventsMessage(event.group, (event.raw,))
    assert encode_message(message) == _h(w, "encoded")
    back = decode_message(_h(w, "encoded"))
    assert isinstance(back, EventsMessage) and back.events == (event.raw,)
    assert decode_event(back.events[0]).id.hex() == e["event_id"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x82\xa1n\x00\xa2ct\xc4\x28" + bytes(40), "zero nonce must use the nonce-free"),
        (b"\x93\x00\xc4\x10" + bytes(16) + b"\x00", r"\[index, ciphertext\]"),
        (b"\x92\xc3\xc4\x10" + bytes(16), "index must be"),
        (b"\x92\x00\xa1x", "ciphertext must be"),
    ],
)
def test_message_bodies_have_one_form(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        decode_body(Kind.MESSAGE, raw)


def test_a_random_nonce_keeps_the_earlier_map_form() -> None:
    blob = b"\x01" * 24 + bytes(16)
    raw = encode_body(PrivateMessage(3, blob))
    assert raw[:1] == b"\x82"  # {n, ct}
    assert decode_body(Kind.MESSAGE, raw) == PrivateMessage(3, blob)
    assert encode_body(PrivateMessage(3, bytes(24) + bytes(16))) == b"\x92\x03\xc4\x10" + bytes(16)
