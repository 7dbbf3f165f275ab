"""Encrypting and decrypting group messages with sender keys and pairwise copies."""

from __future__ import annotations

import dataclasses
import os

import pytest

from node.crypto import sender_keys
from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import OwnSenderKey
from node.errors import DecryptError
from node.group import keys as K
from node.group.bodies import SenderKey, decode_body, encode_body
from node.group.content import Post
from node.group.events import EventError, GroupId, Kind
from node.wire.strict import pack

ALICE, BOB, CAROL = (IdentityKey(bytes([i]) * 32) for i in (1, 2, 3))
G = GroupId(bytes(range(32)))


def test_private_round_trip_and_rotation_excludes_the_departed() -> None:
    keys = K.GroupKeys()
    members = {ALICE.peer_id, BOB.peer_id, CAROL.peer_id}
    assert K.needs_rotation(keys, members)
    own, dist, copies = K.new_sender_key(keys, ALICE.peer_id, members, os.urandom)
    keys.own = own
    assert set(copies) == {BOB.peer_id, CAROL.peer_id} and dist.committed and not dist.keys
    bob_state = K.open_distribution(BOB, dist, copies[BOB.peer_id])
    assert bob_state is not None
    counters = K.Counters()
    own2, body = K.encrypt_private(own, G, ALICE.peer_id, "hi", counters, os.urandom)
    assert counters.encryptions == 1 and own2.key.index == own.key.index + 1
    _, text = K.decrypt_private(bob_state, G, ALICE.peer_id, own.epoch, body)
    assert text == Post("hi")
    # wrong author or epoch in the AD: refused
    with pytest.raises(DecryptError):
        K.decrypt_private(bob_state, G, BOB.peer_id, own.epoch, body)
    # carol leaves: alice must rotate, and the new key does not reach carol
    keys.own = own2
    assert K.needs_rotation(keys, {ALICE.peer_id, BOB.peer_id})
    own3, dist3, copies3 = K.new_sender_key(keys, ALICE.peer_id, {ALICE.peer_id, BOB.peer_id},
                                            os.urandom)
    assert own3.epoch == own.epoch + 1 and set(copies3) == {BOB.peer_id}
    assert K.open_distribution(CAROL, dist3, None) is None
    with pytest.raises(DecryptError):  # bob's copy is sealed to bob
        K.open_distribution(CAROL, dist3, copies3[BOB.peer_id])
    assert K.open_distribution(BOB, dist3, copies3[BOB.peer_id]) is not None


def test_newcomer_distribution_reads_from_now_on() -> None:
    keys = K.GroupKeys()
    own, _, _ = K.new_sender_key(keys, ALICE.peer_id, {ALICE.peer_id, BOB.peer_id}, os.urandom)
    own, early = K.encrypt_private(own, G, ALICE.peer_id, "before", K.Counters(), os.urandom)
    dist, copies = K.distribution(own.key, own.epoch, frozenset({CAROL.peer_id}), os.urandom)
    assert set(copies) == {CAROL.peer_id}
    carol = K.open_distribution(CAROL, dist, copies[CAROL.peer_id])
    assert carol is not None
    own, late = K.encrypt_private(own, G, ALICE.peer_id, "after", K.Counters(), os.urandom)
    assert K.decrypt_private(carol, G, ALICE.peer_id, own.epoch, late)[1] == Post("after")
    with pytest.raises(DecryptError):
        K.decrypt_private(carol, G, ALICE.peer_id, own.epoch, early)


def test_a_sender_key_copy_must_match_the_commitment() -> None:
    """A committed SENDER_KEY binds the one chain state every recipient gets: a copy
    sealed (by anyone) to a recipient with another state is refused."""
    own, dist, copies = K.new_sender_key(K.GroupKeys(), ALICE.peer_id,
                                         {ALICE.peer_id, BOB.peer_id, CAROL.peer_id}, os.urandom)
    other = OwnSenderKey.generate(os.urandom)
    forged = sender_keys.seal_for(BOB.x25519_public, dataclasses.replace(
        other.receiver_state(), signing_public=own.key.signing_public))
    with pytest.raises(DecryptError, match="commitment"):
        K.open_distribution(BOB, dist, forged)
    ahead = sender_keys.seal_for(BOB.x25519_public, dataclasses.replace(
        own.key.receiver_state(), index=1))  # the right chain key, another index
    with pytest.raises(DecryptError, match="commitment"):
        K.open_distribution(BOB, dist, ahead)
    with pytest.raises(DecryptError):
        K.open_distribution(BOB, dist, copies[BOB.peer_id][:-1])
    state = K.open_distribution(BOB, dist, copies[BOB.peer_id])
    assert state is not None and state.chain_key == own.key.chain_key and state.index == 0
    # the commitment is salted: two distributions of the same state do not link
    again, _ = K.distribution(own.key, own.epoch, frozenset({BOB.peer_id}), os.urandom)
    assert again.salt != dist.salt and again.commitment != dist.commitment


def test_the_inline_form_is_still_read() -> None:
    """A SENDER_KEY of the older form (every sealed key inside the body) still opens."""
    own = OwnSenderKey.generate(os.urandom)
    sealed = sender_keys.seal_for(BOB.x25519_public, own.receiver_state())
    inline = SenderKey(3, own.signing_public, ((BOB.peer_id, sealed),))
    assert not inline.committed
    decoded = decode_body(Kind.SENDER_KEY, encode_body(inline))
    assert decoded == inline
    state = K.open_distribution(BOB, inline, None)
    assert state is not None and state.chain_key == own.chain_key
    assert K.open_distribution(CAROL, inline, None) is None


def test_the_committed_body_round_trips_and_is_strict() -> None:
    _, dist, _ = K.new_sender_key(K.GroupKeys(), ALICE.peer_id, {ALICE.peer_id, BOB.peer_id},
                                  os.urandom)
    raw = encode_body(dist)
    assert decode_body(Kind.SENDER_KEY, raw) == dist
    assert len(raw) == 1 + 6 + 1 + 5 + 34 + 5 + 18 + 7 + 34  # map, epoch, sign, salt, commit
    fields = {"epoch": 0, "sign": dist.signing_public, "salt": dist.salt,
              "commit": dist.commitment}
    for bad in ({**fields, "keys": []}, {**fields, "salt": b"x" * 15},
                {k: v for k, v in fields.items() if k != "salt"}, {**fields, "commit": b""}):
        with pytest.raises(EventError):
            decode_body(Kind.SENDER_KEY, pack(bad))


def test_pairwise_copies_and_commitment() -> None:
    counters = K.Counters()
    body, copies = K.encrypt_pairwise(ALICE, [BOB.peer_id, CAROL.peer_id], G, 5, "hey",
                                      counters, os.urandom)
    assert counters.encryptions == 2 and set(copies) == {BOB.peer_id, CAROL.peer_id}
    assert K.decrypt_pairwise(BOB, G, ALICE.peer_id, 5, body, copies[BOB.peer_id]) == Post("hey")
    with pytest.raises(DecryptError):  # carol's copy is not bob's
        K.decrypt_pairwise(BOB, G, ALICE.peer_id, 5, body, copies[CAROL.peer_id])
    with pytest.raises(DecryptError):  # bound to the event's seq
        K.decrypt_pairwise(BOB, G, ALICE.peer_id, 6, body, copies[BOB.peer_id])
    other, _ = K.encrypt_pairwise(ALICE, [BOB.peer_id], G, 5, "something else",
                                  K.Counters(), os.urandom)
    with pytest.raises(DecryptError, match="commitment"):  # a copy that disagrees with the event
        K.decrypt_pairwise(BOB, G, ALICE.peer_id, 5, other, copies[BOB.peer_id])
