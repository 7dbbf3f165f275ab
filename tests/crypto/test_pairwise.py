"""Tests for the pure pairwise-mode core (node/crypto/pairwise.py)."""

from __future__ import annotations

import hashlib

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.crypto.pairwise import (
    COMMITMENT_LEN,
    NONCE_LEN,
    SALT_LEN,
    TAG_LEN,
    commitment,
    decrypt_from,
    encrypt_for,
    new_salt,
    verify_commitment,
)
from node.errors import DecryptError, LocalProtocolError, RemoteProtocolError

CAROL = IdentityKey(bytes(range(64, 96)))
# An Ed25519 point of order 4 (y = 0): libsodium converts it to a low-order X25519 key.
LOW_ORDER_ED25519 = bytes(32)
NOT_A_POINT = bytes.fromhex("02" + "00" * 31)  # y = 2 has no x on the curve


def fixed_rng(n: int) -> bytes:
    return bytes(range(n))


def test_round_trip(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"hello bob", b"group|event")
    assert len(blob) == NONCE_LEN + len(b"hello bob") + TAG_LEN
    assert decrypt_from(bob, alice.public_key, blob, b"group|event") == b"hello bob"


def test_construction_is_beforenm_then_xchacha_with_bound_identities(
    alice: IdentityKey, bob: IdentityKey
) -> None:
    # Rebuild the documented construction by hand (see the module docstring).
    blob = encrypt_for(alice, bob.public_key, b"spec", b"ctx", fixed_rng)
    nonce, ciphertext = blob[:NONCE_LEN], blob[NONCE_LEN:]
    assert nonce == bytes(range(NONCE_LEN))
    key = nacl.bindings.crypto_box_beforenm(bob.x25519_public, alice.x25519_private)
    assert key == nacl.bindings.crypto_box_beforenm(alice.x25519_public, bob.x25519_private)
    aad = b"kith/1 pairwise\x00" + alice.public_key + bob.public_key + b"ctx"
    plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ciphertext, aad, nonce, key
    )
    assert plaintext == b"spec"


def test_random_nonce_by_default(alice: IdentityKey, bob: IdentityKey) -> None:
    first = encrypt_for(alice, bob.public_key, b"same", b"")
    second = encrypt_for(alice, bob.public_key, b"same", b"")
    assert first[:NONCE_LEN] != second[:NONCE_LEN]


def test_short_rng_output_is_refused(alice: IdentityKey, bob: IdentityKey) -> None:
    with pytest.raises(LocalProtocolError):
        encrypt_for(alice, bob.public_key, b"m", b"", lambda n: bytes(n - 1))


def test_wrong_recipient_fails(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"for bob", b"ad")
    with pytest.raises(DecryptError):
        decrypt_from(CAROL, alice.public_key, blob, b"ad")


def test_wrong_sender_fails(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"from alice", b"ad")
    with pytest.raises(DecryptError):
        decrypt_from(bob, CAROL.public_key, blob, b"ad")


def test_reflection_back_to_the_author_fails(alice: IdentityKey, bob: IdentityKey) -> None:
    # The shared key is the same both ways; the bound identities make direction matter.
    blob = encrypt_for(alice, bob.public_key, b"to bob", b"ad")
    with pytest.raises(DecryptError):
        decrypt_from(alice, bob.public_key, blob, b"ad")


def test_wrong_ad_fails(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"m", b"event-1")
    with pytest.raises(DecryptError):
        decrypt_from(bob, alice.public_key, blob, b"event-2")
    with pytest.raises(DecryptError):
        decrypt_from(bob, alice.public_key, blob, b"")


def test_tampering_anywhere_fails(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"tamper with me", b"ad")
    for position in range(len(blob)):
        bad = bytearray(blob)
        bad[position] ^= 0x80
        with pytest.raises(DecryptError):
            decrypt_from(bob, alice.public_key, bytes(bad), b"ad")


def test_truncated_blobs_fail(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"m", b"ad")
    for length in (0, 1, NONCE_LEN, NONCE_LEN + TAG_LEN - 1, len(blob) - 1):
        with pytest.raises(DecryptError):
            decrypt_from(bob, alice.public_key, blob[:length], b"ad")


def test_empty_plaintext(alice: IdentityKey, bob: IdentityKey) -> None:
    blob = encrypt_for(alice, bob.public_key, b"", b"")
    assert len(blob) == NONCE_LEN + TAG_LEN
    assert decrypt_from(bob, alice.public_key, blob, b"") == b""


def test_encrypting_to_oneself_works(alice: IdentityKey) -> None:
    blob = encrypt_for(alice, alice.public_key, b"note to self", b"")
    assert decrypt_from(alice, alice.public_key, blob, b"") == b"note to self"


@pytest.mark.parametrize("bad_key", [LOW_ORDER_ED25519, NOT_A_POINT, bytes(31), bytes(33)])
def test_unusable_peer_keys(alice: IdentityKey, bad_key: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        encrypt_for(alice, bad_key, b"m", b"")
    with pytest.raises(DecryptError):
        decrypt_from(alice, bad_key, bytes(64), b"")


@given(plaintext=st.binary(max_size=1024), ad=st.binary(max_size=64))
def test_round_trip_any_message(plaintext: bytes, ad: bytes) -> None:
    alice = IdentityKey(bytes(range(32)))
    bob = IdentityKey(bytes(range(32, 64)))
    blob = encrypt_for(alice, bob.public_key, plaintext, ad)
    assert decrypt_from(bob, alice.public_key, blob, ad) == plaintext


@given(
    sender_seed=st.binary(min_size=32, max_size=32),
    recipient_seed=st.binary(min_size=32, max_size=32),
    plaintext=st.binary(max_size=256),
    ad=st.binary(max_size=64),
    other_ad=st.binary(max_size=64),
)
def test_round_trip_any_keys(
    sender_seed: bytes, recipient_seed: bytes, plaintext: bytes, ad: bytes, other_ad: bytes
) -> None:
    sender, recipient = IdentityKey(sender_seed), IdentityKey(recipient_seed)
    blob = encrypt_for(sender, recipient.public_key, plaintext, ad)
    assert decrypt_from(recipient, sender.public_key, blob, ad) == plaintext
    if other_ad != ad:
        with pytest.raises(DecryptError):
            decrypt_from(recipient, sender.public_key, blob, other_ad)


# --- commitments ------------------------------------------------------------------------------


def test_commitment_is_personalised_keyed_blake2b() -> None:
    salt = bytes(range(SALT_LEN))
    expected = hashlib.blake2b(b"hello", digest_size=32, key=salt, person=b"kith-pairwise").digest()
    assert commitment(b"hello", salt) == expected
    assert len(expected) == COMMITMENT_LEN
    assert commitment(b"hello", salt) == commitment(b"hello", salt)


def test_commitment_binds_plaintext_and_salt() -> None:
    salt = new_salt()
    assert commitment(b"yes", salt) != commitment(b"no", salt)
    assert commitment(b"yes", salt) != commitment(b"yes", new_salt())
    assert commitment(b"", salt) != commitment(b"\x00", salt)


@given(
    a=st.binary(max_size=128),
    b=st.binary(max_size=128),
    salt=st.binary(min_size=SALT_LEN, max_size=SALT_LEN),
)
def test_commitments_differ_when_plaintexts_differ(a: bytes, b: bytes, salt: bytes) -> None:
    assert (commitment(a, salt) == commitment(b, salt)) == (a == b)
    assert verify_commitment(a, salt, commitment(a, salt))
    assert verify_commitment(b, salt, commitment(a, salt)) == (a == b)


def test_verify_commitment_is_false_on_malformed_input() -> None:
    salt = new_salt()
    c = commitment(b"m", salt)
    assert verify_commitment(b"m", salt, c)
    assert not verify_commitment(b"m", salt[:15], c)
    assert not verify_commitment(b"m", salt, c[:31])
    assert not verify_commitment(b"m", salt, bytes(32))


def test_commitment_salt_must_be_16_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        commitment(b"m", bytes(15))
    with pytest.raises(LocalProtocolError):
        commitment(b"m", bytes(17))


def test_new_salt_uses_the_injected_rng() -> None:
    assert new_salt(fixed_rng) == bytes(range(SALT_LEN))
    assert len(new_salt()) == SALT_LEN
    assert new_salt() != new_salt()
    with pytest.raises(LocalProtocolError):
        new_salt(lambda n: bytes(n - 1))


def test_every_recipient_checks_one_commitment(alice: IdentityKey, bob: IdentityKey) -> None:
    # The use the commitment exists for: one signed value, many ciphertexts.
    salt = new_salt()
    signed_commitment = commitment(b"meet at 6", salt)
    honest = encrypt_for(alice, bob.public_key, b"meet at 6", b"ev")
    lying = encrypt_for(alice, CAROL.public_key, b"meet at 7", b"ev")
    assert verify_commitment(
        decrypt_from(bob, alice.public_key, honest, b"ev"), salt, signed_commitment
    )
    assert not verify_commitment(
        decrypt_from(CAROL, alice.public_key, lying, b"ev"), salt, signed_commitment
    )
