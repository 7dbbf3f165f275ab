"""Tests for the pure Sender Keys core (node/crypto/sender_keys.py)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import sender_keys
from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import (
    MAX_JUMP,
    MAX_SKIP,
    NONCE_LEN,
    SEALED_OVERHEAD,
    SEALED_PAYLOAD_LEN,
    TAG_LEN,
    OwnSenderKey,
    SenderKeyState,
    decode_sealed_payload,
    decrypt,
    encode_sealed_payload,
    encrypt,
    message_key,
    next_chain_key,
    open_sealed,
    seal_for,
    verify,
)
from node.errors import DecryptError, LocalProtocolError, RemoteProtocolError

CK0 = bytes(range(32))


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    """A deterministic byte source (SHA-256 in counter mode) for reproducible tests."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def ad(index: int) -> bytes:
    """Associated data as a caller would build it: group, author, epoch and index."""
    return b"group-1|author-a|epoch-0|" + index.to_bytes(8, "big")


def make_messages(n: int, seed: bytes = b"k") -> tuple[OwnSenderKey, SenderKeyState, list[bytes]]:
    """A fresh sender key, the receiver state at index 0, and ``n`` encrypted messages."""
    own = OwnSenderKey.generate(seeded_rng(seed))
    start = own.receiver_state()
    blobs = []
    for i in range(n):
        own, used, blob = encrypt(own, b"message %d" % i, ad(i), seeded_rng(b"n%d" % i))
        assert used == i
        blobs.append(blob)
    return own, start, blobs


# --- the hash ratchet ---------------------------------------------------------------------


def test_chain_derivations_match_hand_computed_hmac_sha256() -> None:
    # Computed independently with `openssl dgst -sha256 -mac HMAC`.
    assert message_key(CK0).hex() == (
        "9b4c8120a4823a95f47cde17a244f4507244ee6e3957d1fab9fa29b44d3829b7"
    )
    ck1 = next_chain_key(CK0)
    assert ck1.hex() == "4304c22c84a53755ab08ead8d97a8d429be5efa480682d7ad1da27f73e1fbe1d"
    assert message_key(ck1).hex() == (
        "f7703c39dea9feb30cb6369304ad7b847b9aca58c1152af317aa78a91beddda1"
    )
    assert message_key(bytes(32)).hex() == (
        "3d7afb663124ecbf2c953f863d4fc8796eeb2d372b64aad58697ec5264649cdb"
    )
    assert next_chain_key(bytes(32)).hex() == (
        "4ee7be0c7872360ca67414608081e9bd60fd580a7bbd209701d2a5a0b4316d0d"
    )


@given(st.binary(min_size=32, max_size=32))
def test_chain_derivations_are_hmac_sha256_with_labels(ck: bytes) -> None:
    assert message_key(ck) == hmac.new(ck, b"\x01", hashlib.sha256).digest()
    assert next_chain_key(ck) == hmac.new(ck, b"\x02", hashlib.sha256).digest()
    assert message_key(ck) != next_chain_key(ck)


def test_chain_key_must_be_32_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        message_key(bytes(31))
    with pytest.raises(LocalProtocolError):
        next_chain_key(bytes(33))


def test_encryption_uses_the_documented_message_key_and_blob_layout() -> None:
    own = OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(32))
    _, _, blob = encrypt(own, b"hello", b"ad", seeded_rng(b"x"))
    nonce, ciphertext = blob[:NONCE_LEN], blob[NONCE_LEN:]
    assert nonce == seeded_rng(b"x")(NONCE_LEN)  # a key not made here: a random nonce
    assert len(ciphertext) == len(b"hello") + TAG_LEN
    plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ciphertext, b"ad", nonce, message_key(CK0)
    )
    assert plaintext == b"hello"


# --- the author's key -----------------------------------------------------------------------


def test_generate_draws_chain_key_and_seed_from_rng() -> None:
    rng_bytes = seeded_rng(b"g")(64)
    own = OwnSenderKey.generate(seeded_rng(b"g"))
    assert own.chain_key == rng_bytes[:32]
    assert own.signing_seed == rng_bytes[32:]
    assert own.index == 0
    assert OwnSenderKey.generate() != OwnSenderKey.generate()  # real randomness by default


def test_generate_rejects_short_rng_output() -> None:
    with pytest.raises(LocalProtocolError):
        OwnSenderKey.generate(lambda n: bytes(n - 1))


def test_secrets_stay_out_of_repr() -> None:
    own = OwnSenderKey(chain_key=b"\xaa" * 32, index=3, signing_seed=b"\xbb" * 32)
    assert "\\xaa\\xaa" not in repr(own) and "\\xbb\\xbb" not in repr(own)
    assert "\\xaa\\xaa" not in repr(own.receiver_state())
    assert "index=3" in repr(own)


def test_encrypt_always_advances_the_key() -> None:
    own = OwnSenderKey.generate(seeded_rng(b"a"))
    seen_chain_keys = {own.chain_key}
    for i in range(100):
        advanced, used, _ = encrypt(own, b"m", ad(i), seeded_rng(b"%d" % i))
        assert used == own.index == i
        assert advanced.index == own.index + 1
        assert advanced.chain_key == next_chain_key(own.chain_key)
        assert advanced.chain_key not in seen_chain_keys
        assert advanced.signing_seed == own.signing_seed
        seen_chain_keys.add(advanced.chain_key)
        own = advanced


def test_encrypt_uses_a_fresh_key_per_message_under_the_fixed_nonce() -> None:
    own = OwnSenderKey.generate(seeded_rng(b"a"))
    own, _, first = encrypt(own, b"same", b"ad")
    own, _, second = encrypt(own, b"same", b"ad")
    assert first[:NONCE_LEN] == second[:NONCE_LEN] == bytes(NONCE_LEN)
    assert first[NONCE_LEN:] != second[NONCE_LEN:]  # another message key, another keystream


def test_a_key_read_back_from_a_store_draws_random_nonces() -> None:
    fresh = OwnSenderKey.generate(seeded_rng(b"a"))
    assert fresh.fresh
    stored = OwnSenderKey(fresh.chain_key, fresh.index, fresh.signing_seed)  # as loaded
    assert stored == fresh and not stored.fresh
    _, _, a = encrypt(stored, b"same", b"ad")
    _, _, b = encrypt(stored, b"same", b"ad")  # a restored copy at the same index
    assert a[:NONCE_LEN] != b[:NONCE_LEN] and bytes(NONCE_LEN) not in (a[:NONCE_LEN], b[:NONCE_LEN])
    advanced, _, _ = encrypt(fresh, b"m", b"ad")
    assert advanced.fresh  # the chain stays this process's own as it advances


def test_a_random_nonce_blob_of_an_earlier_version_still_decrypts() -> None:
    own = OwnSenderKey.generate(seeded_rng(b"a"))
    nonce = seeded_rng(b"n")(NONCE_LEN)
    blob = nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        b"old", b"ad", nonce, message_key(own.chain_key)
    )
    _, plaintext = decrypt(own.receiver_state(), 0, blob, b"ad")
    assert plaintext == b"old"


def test_exhausted_key_refuses_to_encrypt() -> None:
    own = OwnSenderKey(chain_key=CK0, index=2**64 - 2, signing_seed=bytes(32))
    with pytest.raises(LocalProtocolError, match="rotate"):
        encrypt(own, b"m", b"ad")


def test_state_validation() -> None:
    with pytest.raises(LocalProtocolError):
        OwnSenderKey(chain_key=bytes(31), index=0, signing_seed=bytes(32))
    with pytest.raises(LocalProtocolError):
        OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(31))
    with pytest.raises(LocalProtocolError):
        OwnSenderKey(chain_key=CK0, index=-1, signing_seed=bytes(32))
    with pytest.raises(LocalProtocolError):
        SenderKeyState(chain_key=CK0, index=0, signing_public=bytes(31))
    with pytest.raises(LocalProtocolError):
        SenderKeyState(
            chain_key=CK0,
            index=MAX_SKIP + 1,
            signing_public=bytes(32),
            skipped=tuple((i, bytes(32)) for i in range(MAX_SKIP + 1)),
        )


# --- receiving ------------------------------------------------------------------------------


def test_round_trip_many_messages_in_order() -> None:
    own, state, blobs = make_messages(300)
    for i, blob in enumerate(blobs):
        state, plaintext = decrypt(state, i, blob, ad(i))
        assert plaintext == b"message %d" % i
        assert state.index == i + 1
        assert state.skipped == ()
    # The receiver ends exactly where the author is.
    assert state.chain_key == own.chain_key
    assert state.index == own.index


@settings(max_examples=60)
@given(st.data())
def test_any_delivery_order_decrypts_each_message_exactly_once(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=50), label="n")
    _, state, blobs = make_messages(n)
    order = data.draw(st.permutations(range(n)), label="order")
    for i in order:
        state, plaintext = decrypt(state, i, blobs[i], ad(i))
        assert plaintext == b"message %d" % i
        # Delivering it again never works.
        with pytest.raises(DecryptError):
            decrypt(state, i, blobs[i], ad(i))
    assert state.index == n
    assert state.skipped == ()


def test_replayed_index_fails() -> None:
    _, state, blobs = make_messages(3)
    state, _ = decrypt(state, 0, blobs[0], ad(0))
    with pytest.raises(DecryptError, match="already used or too old"):
        decrypt(state, 0, blobs[0], ad(0))


def test_replayed_skipped_index_fails() -> None:
    _, state, blobs = make_messages(3)
    state, _ = decrypt(state, 2, blobs[2], ad(2))
    assert [i for i, _ in state.skipped] == [0, 1]
    state, _ = decrypt(state, 1, blobs[1], ad(1))
    assert [i for i, _ in state.skipped] == [0]
    with pytest.raises(DecryptError, match="already used or too old"):
        decrypt(state, 1, blobs[1], ad(1))


def test_gap_larger_than_max_skip_keeps_only_the_newest_keys() -> None:
    gap = 2500
    own = OwnSenderKey.generate(seeded_rng(b"gap"))
    state = own.receiver_state()
    blobs: dict[int, bytes] = {}
    for i in range(gap + 1):
        own, _, blob = encrypt(own, b"m%d" % i, ad(i), seeded_rng(b"%d" % i))
        if i in (0, gap - MAX_SKIP - 1, gap - MAX_SKIP, gap - 1, gap):
            blobs[i] = blob
    state, plaintext = decrypt(state, gap, blobs[gap], ad(gap))
    assert plaintext == b"m%d" % gap
    assert len(state.skipped) == MAX_SKIP
    assert [i for i, _ in state.skipped] == list(range(gap - MAX_SKIP, gap))
    for dropped in (0, gap - MAX_SKIP - 1):
        with pytest.raises(DecryptError, match="already used or too old"):
            decrypt(state, dropped, blobs[dropped], ad(dropped))
    for kept in (gap - MAX_SKIP, gap - 1):
        state, plaintext = decrypt(state, kept, blobs[kept], ad(kept))
        assert plaintext == b"m%d" % kept


def test_skipped_keys_accumulate_oldest_dropped_first() -> None:
    # Two gaps whose sum exceeds MAX_SKIP: the oldest keys of the first gap go.
    own = OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(32))
    state = own.receiver_state()
    chain = [CK0]
    for _ in range(2 * MAX_SKIP):
        chain.append(next_chain_key(chain[-1]))

    def blob_at(i: int) -> bytes:
        key = OwnSenderKey(chain_key=chain[i], index=i, signing_seed=bytes(32))
        return encrypt(key, b"x", ad(i))[2]

    first = 1500
    state, _ = decrypt(state, first, blob_at(first), ad(first))
    second = first + 1 + 1000
    state, _ = decrypt(state, second, blob_at(second), ad(second))
    indices = [i for i, _ in state.skipped]
    assert len(indices) == MAX_SKIP
    assert indices == list(range(500, first)) + list(range(first + 1, second))
    assert dict(state.skipped)[500] == message_key(chain[500])


def _count_derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_hmac = sender_keys._hmac_sha256
    real_next = sender_keys.next_chain_key
    real_mk = sender_keys.message_key

    def counting_hmac(key: bytes, data: bytes) -> bytes:
        calls.append("hmac")
        return real_hmac(key, data)

    def counting_next(ck: bytes) -> bytes:
        calls.append("next_chain_key")
        return real_next(ck)

    def counting_mk(ck: bytes) -> bytes:
        calls.append("message_key")
        return real_mk(ck)

    monkeypatch.setattr(sender_keys, "_hmac_sha256", counting_hmac)
    monkeypatch.setattr(sender_keys, "next_chain_key", counting_next)
    monkeypatch.setattr(sender_keys, "message_key", counting_mk)
    return calls


def test_jump_beyond_max_jump_is_refused_before_any_derivation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(32))
    state = own.receiver_state()
    blob = encrypt(own, b"m", b"ad")[2]  # contents do not matter: refused on the index
    calls = _count_derivations(monkeypatch)
    with pytest.raises(DecryptError, match="ahead"):
        decrypt(state, MAX_JUMP + 1, blob, b"ad")
    assert calls == []
    # Also from a later position: the limit is relative to the receiver's index.
    later = SenderKeyState(chain_key=CK0, index=10, signing_public=bytes(32))
    with pytest.raises(DecryptError, match="ahead"):
        decrypt(later, 10 + MAX_JUMP + 1, blob, b"ad")
    assert calls == []


def test_jump_of_exactly_max_jump_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    ck = CK0
    for _ in range(MAX_JUMP):
        ck = next_chain_key(ck)
    own = OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(32))
    state = own.receiver_state()
    far = OwnSenderKey(chain_key=ck, index=MAX_JUMP, signing_seed=bytes(32))
    _, used, blob = encrypt(far, b"far ahead", ad(MAX_JUMP))
    assert used == MAX_JUMP
    calls = _count_derivations(monkeypatch)
    state, plaintext = decrypt(state, MAX_JUMP, blob, ad(MAX_JUMP))
    assert plaintext == b"far ahead"
    assert state.index == MAX_JUMP + 1
    assert len(state.skipped) == MAX_SKIP
    # One chain step per index crossed plus one past the message, and message keys only
    # for what is kept (MAX_SKIP) and the message itself.
    assert calls.count("next_chain_key") == MAX_JUMP + 1
    assert calls.count("message_key") == MAX_SKIP + 1


def test_failures_leave_the_state_usable_and_unchanged() -> None:
    _, state, blobs = make_messages(5)
    state, _ = decrypt(state, 3, blobs[3], ad(3))  # leaves 0, 1, 2 skipped
    snapshot = SenderKeyState(
        chain_key=state.chain_key,
        index=state.index,
        signing_public=state.signing_public,
        skipped=state.skipped,
    )
    other_key = OwnSenderKey.generate(seeded_rng(b"other"))
    _, _, foreign = encrypt(other_key, b"message 4", ad(4))
    attempts = [
        (4, blobs[4][:-1] + bytes([blobs[4][-1] ^ 1]), ad(4)),  # tampered tag
        (4, blobs[4][:30] + bytes([blobs[4][30] ^ 1]) + blobs[4][31:], ad(4)),  # ciphertext
        (4, bytes([blobs[4][0] ^ 1]) + blobs[4][1:], ad(4)),  # nonce
        (4, blobs[4], ad(5)),  # wrong associated data
        (4, foreign, ad(4)),  # another sender key
        (1, blobs[1][:-1] + bytes([blobs[1][-1] ^ 1]), ad(1)),  # tampered, skipped key
        (1, blobs[1], ad(2)),  # wrong ad, skipped key
        (4, blobs[4][: NONCE_LEN + TAG_LEN - 1], ad(4)),  # too short
        (-1, blobs[4], ad(4)),  # negative index
        (2**64 - 1, blobs[4], ad(4)),  # beyond any index encrypt uses
    ]
    for index, blob, associated in attempts:
        with pytest.raises(DecryptError):
            decrypt(state, index, blob, associated)
        assert state == snapshot
    # The genuine messages still decrypt: nothing was consumed by the failures.
    for i in (1, 4, 0, 2):
        state, plaintext = decrypt(state, i, blobs[i], ad(i))
        assert plaintext == b"message %d" % i


def test_failed_jump_does_not_store_derived_keys() -> None:
    _, state, blobs = make_messages(10)
    with pytest.raises(DecryptError):
        decrypt(state, 9, blobs[9], b"wrong ad")
    assert state.index == 0 and state.skipped == ()
    state, _ = decrypt(state, 0, blobs[0], ad(0))
    assert state.skipped == ()


def test_empty_plaintext_round_trips() -> None:
    own = OwnSenderKey.generate(seeded_rng(b"e"))
    state = own.receiver_state()
    _, _, blob = encrypt(own, b"", b"")
    assert len(blob) == NONCE_LEN + TAG_LEN
    assert decrypt(state, 0, blob, b"")[1] == b""


def test_joining_member_reads_from_its_index_on_but_not_before() -> None:
    own = OwnSenderKey.generate(seeded_rng(b"j"))
    early_member = own.receiver_state()
    history = []
    for i in range(5):
        own, _, blob = encrypt(own, b"before %d" % i, ad(i))
        history.append(blob)
    newcomer = own.receiver_state()
    assert newcomer.index == 5
    later = []
    for i in range(5, 8):
        own, _, blob = encrypt(own, b"after %d" % i, ad(i))
        later.append(blob)
    for i, blob in enumerate(later, start=5):
        newcomer, plaintext = decrypt(newcomer, i, blob, ad(i))
        assert plaintext == b"after %d" % i
    for i, blob in enumerate(history):
        with pytest.raises(DecryptError):
            decrypt(newcomer, i, blob, ad(i))
    # Whereas a member who was there from the start reads all of it.
    for i, blob in enumerate(history + later):
        early_member, _ = decrypt(early_member, i, blob, ad(i))


# --- signatures -----------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    own = OwnSenderKey.generate(seeded_rng(b"s"))
    other = OwnSenderKey.generate(seeded_rng(b"t"))
    signature = own.sign(b"event bytes")
    assert len(signature) == 64
    assert verify(own.signing_public, b"event bytes", signature)
    assert own.receiver_state().signing_public == own.signing_public
    assert not verify(other.signing_public, b"event bytes", signature)
    assert not verify(own.signing_public, b"event bytez", signature)
    assert not verify(own.signing_public, b"event bytes", signature[:-1] + b"\x00")
    assert not verify(own.signing_public, b"event bytes", signature[:63])
    assert not verify(own.signing_public[:31], b"event bytes", signature)
    assert not verify(bytes(32), b"event bytes", signature)


def test_signing_key_matches_libsodium_seed_keypair() -> None:
    own = OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(range(32)))
    assert own.signing_public == nacl.bindings.crypto_sign_seed_keypair(bytes(range(32)))[0]


@given(st.binary(max_size=200))
def test_signatures_verify_for_any_message(message: bytes) -> None:
    own = OwnSenderKey(chain_key=CK0, index=0, signing_seed=bytes(32))
    assert verify(own.signing_public, message, own.sign(message))
    assert not verify(own.signing_public, message + b"!", own.sign(message))


# --- distribution -----------------------------------------------------------------------------


def test_sealed_payload_encoding_is_fixed() -> None:
    state = SenderKeyState(chain_key=CK0, index=0x0102, signing_public=bytes(32))
    payload = encode_sealed_payload(state)
    assert len(payload) == SEALED_PAYLOAD_LEN == 41
    assert payload == b"\x01" + CK0 + bytes(6) + b"\x01\x02"
    assert decode_sealed_payload(payload, b"\x07" * 32) == SenderKeyState(
        chain_key=CK0, index=0x0102, signing_public=b"\x07" * 32
    )


def test_seal_and_open_round_trip(alice: IdentityKey, bob: IdentityKey) -> None:
    own = OwnSenderKey.generate(seeded_rng(b"d"))
    own, _, first = encrypt(own, b"first", ad(0))
    # Alice has skipped keys in her copy; they do not travel.
    state = own.receiver_state()
    state = SenderKeyState(
        chain_key=state.chain_key,
        index=state.index,
        signing_public=state.signing_public,
        skipped=((0, bytes(32)),),
    )
    blob = seal_for(bob.x25519_public, state)
    assert len(blob) == SEALED_OVERHEAD + SEALED_PAYLOAD_LEN
    opened = open_sealed(bob, blob, own.signing_public)
    assert opened == own.receiver_state()
    assert opened.skipped == ()
    own, _, second = encrypt(own, b"second", ad(1))
    assert decrypt(opened, 1, second, ad(1))[1] == b"second"
    with pytest.raises(DecryptError):
        decrypt(opened, 0, first, ad(0))
    # Sealing is randomised: the same key sealed twice gives different blobs.
    assert seal_for(bob.x25519_public, state) != blob


def test_open_sealed_wrong_recipient_fails(alice: IdentityKey, bob: IdentityKey) -> None:
    state = OwnSenderKey.generate(seeded_rng(b"d")).receiver_state()
    blob = seal_for(bob.x25519_public, state)
    with pytest.raises(DecryptError):
        open_sealed(alice, blob, state.signing_public)


@pytest.mark.parametrize("position", [0, 31, 32, 47, 48, 60, 88])
def test_open_sealed_tampered_blob_fails(bob: IdentityKey, position: int) -> None:
    state = OwnSenderKey.generate(seeded_rng(b"d")).receiver_state()
    blob = bytearray(seal_for(bob.x25519_public, state))
    blob[position] ^= 0x01
    with pytest.raises(DecryptError):
        open_sealed(bob, bytes(blob), state.signing_public)


def test_open_sealed_malformed_inputs_fail(bob: IdentityKey) -> None:
    state = OwnSenderKey.generate(seeded_rng(b"d")).receiver_state()
    blob = seal_for(bob.x25519_public, state)
    for bad in (b"", blob[:-1], blob + b"\x00", bytes(len(blob))):
        with pytest.raises(DecryptError):
            open_sealed(bob, bad, state.signing_public)
    with pytest.raises(DecryptError):
        open_sealed(bob, blob, state.signing_public[:31])


def test_open_sealed_rejects_well_sealed_but_malformed_payloads(bob: IdentityKey) -> None:
    good = encode_sealed_payload(OwnSenderKey.generate(seeded_rng(b"d")).receiver_state())
    wrong_version = b"\x02" + good[1:]
    max_index = good[:33] + b"\xff" * 8
    for payload in (wrong_version, max_index, good + b"\x00"):
        blob = nacl.bindings.crypto_box_seal(payload, bob.x25519_public)
        with pytest.raises(DecryptError):
            open_sealed(bob, blob, bytes(32))


def test_seal_for_refuses_unusable_recipient_keys() -> None:
    state = OwnSenderKey.generate(seeded_rng(b"d")).receiver_state()
    with pytest.raises(LocalProtocolError):
        seal_for(bytes(31), state)
    with pytest.raises(RemoteProtocolError):
        seal_for(bytes(32), state)  # the all-zero (low-order) point
