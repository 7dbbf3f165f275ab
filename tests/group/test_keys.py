"""Encrypting and decrypting group messages with sender keys and pairwise copies."""

from __future__ import annotations

import os

import pytest

from node.crypto.keys import IdentityKey
from node.errors import DecryptError
from node.group import keys as K
from node.group.content import Post
from node.group.events import GroupId

ALICE, BOB, CAROL = (IdentityKey(bytes([i]) * 32) for i in (1, 2, 3))
G = GroupId(bytes(range(32)))


def test_private_round_trip_and_rotation_excludes_the_departed() -> None:
    keys = K.GroupKeys()
    members = {ALICE.peer_id, BOB.peer_id, CAROL.peer_id}
    assert K.needs_rotation(keys, members)
    own, dist = K.new_sender_key(keys, ALICE.peer_id, members, os.urandom)
    keys.own = own
    assert {m for m, _ in dist.keys} == {BOB.peer_id, CAROL.peer_id}
    bob_state = K.open_distribution(BOB, dist)
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
    own3, dist3 = K.new_sender_key(keys, ALICE.peer_id, {ALICE.peer_id, BOB.peer_id}, os.urandom)
    assert own3.epoch == own.epoch + 1
    assert K.open_distribution(CAROL, dist3) is None
    assert K.open_distribution(BOB, dist3) is not None


def test_newcomer_distribution_reads_from_now_on() -> None:
    keys = K.GroupKeys()
    own, _ = K.new_sender_key(keys, ALICE.peer_id, {ALICE.peer_id, BOB.peer_id}, os.urandom)
    own, early = K.encrypt_private(own, G, ALICE.peer_id, "before", K.Counters(), os.urandom)
    dist = K.distribution(own.key, own.epoch, frozenset({CAROL.peer_id}))
    carol = K.open_distribution(CAROL, dist)
    assert carol is not None
    own, late = K.encrypt_private(own, G, ALICE.peer_id, "after", K.Counters(), os.urandom)
    assert K.decrypt_private(carol, G, ALICE.peer_id, own.epoch, late)[1] == Post("after")
    with pytest.raises(DecryptError):
        K.decrypt_private(carol, G, ALICE.peer_id, own.epoch, early)


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
