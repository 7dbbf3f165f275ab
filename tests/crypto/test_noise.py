"""Unit and property tests for the sans-I/O Noise core (node/crypto/noise.py)."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import noise
from node.crypto.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    MAX_PLAINTEXT_LEN,
    TAG_LEN,
    CipherState,
    HandshakePhase,
    HandshakeState,
    generate_keypair,
    supports,
    x25519_public,
)
from node.errors import (
    DecryptError,
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
)

XX = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
IK = "Noise_IK_25519_ChaChaPoly_BLAKE2b"
ZERO_POINT = bytes(32)
ORDER_8_POINT = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
LOW_ORDER_POINTS = [ZERO_POINT, ORDER_8_POINT]

keys32 = st.binary(min_size=32, max_size=32)
payloads = st.binary(max_size=300)


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    """A deterministic rng (a hash counter): tests never depend on real randomness."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def xx_pair(
    prologue_i: bytes = b"kith", prologue_r: bytes = b"kith"
) -> tuple[HandshakeState, HandshakeState]:
    init = HandshakeState(
        XX, initiator=True, prologue=prologue_i, s=key("alice"), rng=seeded_rng(b"i")
    )
    resp = HandshakeState(
        XX, initiator=False, prologue=prologue_r, s=key("bob"), rng=seeded_rng(b"r")
    )
    return init, resp


def xx_messages() -> list[bytes]:
    """The three messages of a clean XX run (deterministic keys)."""
    init, resp = xx_pair()
    m1 = init.write_message(b"one")
    resp.read_message(m1)
    m2 = resp.write_message(b"two")
    init.read_message(m2)
    m3 = init.write_message(b"three")
    resp.read_message(m3)
    return [m1, m2, m3]


def run_handshake(init: HandshakeState, resp: HandshakeState) -> None:
    """Alternate write/read with empty payloads until both sides are complete."""
    while not (init.complete and resp.complete):
        writer, reader = (init, resp) if init.is_my_turn else (resp, init)
        reader.read_message(writer.write_message(b""))


def assert_aborted(hs: HandshakeState) -> None:
    assert hs.phase is HandshakePhase.FAILED
    assert not hs.is_my_turn and not hs.complete
    with pytest.raises(LocalProtocolError):
        hs.write_message(b"")
    with pytest.raises(LocalProtocolError):
        hs.read_message(bytes(100))
    with pytest.raises(LocalProtocolError):
        hs.split()


# --- full handshakes --------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    s_i=keys32,
    s_r=keys32,
    seed=st.binary(max_size=8),
    hs_payloads=st.lists(payloads, min_size=3, max_size=3),
    to_resp=st.lists(payloads, max_size=5),
    to_init=st.lists(payloads, max_size=5),
    hash_name=st.sampled_from(["BLAKE2b", "SHA256"]),
)
def test_xx_roundtrip(
    s_i: bytes,
    s_r: bytes,
    seed: bytes,
    hs_payloads: list[bytes],
    to_resp: list[bytes],
    to_init: list[bytes],
    hash_name: str,
) -> None:
    name = f"Noise_XX_25519_ChaChaPoly_{hash_name}"
    init = HandshakeState(name, initiator=True, s=s_i, rng=seeded_rng(b"i" + seed))
    resp = HandshakeState(name, initiator=False, s=s_r, rng=seeded_rng(b"r" + seed))
    for i, payload in enumerate(hs_payloads):
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        assert writer.is_my_turn and not reader.is_my_turn
        assert reader.read_message(writer.write_message(payload)) == payload
    assert init.complete and resp.complete
    assert init.remote_static == x25519_public(s_r) == resp.local_static_public
    assert resp.remote_static == x25519_public(s_i) == init.local_static_public
    assert init.handshake_hash == resp.handshake_hash
    i_send, i_recv = init.split()
    r_recv, r_send = resp.split()
    for payload in to_resp:
        assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", payload)) == payload
    for payload in to_init:
        assert i_recv.decrypt_with_ad(b"ad", r_send.encrypt_with_ad(b"ad", payload)) == payload
    assert i_send.nonce == r_recv.nonce == len(to_resp)
    assert r_send.nonce == i_recv.nonce == len(to_init)


PATTERNS = ["N", "K", "X", "NN", "NK", "NX", "KN", "KK", "KX", "XN", "XK", "XX", "IN", "IK", "IX"]


@pytest.mark.parametrize("hash_name", ["BLAKE2b", "BLAKE2s", "SHA256", "SHA512"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_supported_pattern_completes(pattern: str, hash_name: str) -> None:
    name = f"Noise_{pattern}_25519_ChaChaPoly_{hash_name}"
    assert supports(name)
    i_s, r_s = key("i-static"), key("r-static")
    # Who needs which key follows from the pattern letters (Noise section 7.5).
    one_way = len(pattern) == 1
    i_needs_s = pattern[0] in "KXI"
    r_needs_s = one_way or pattern[1] in "KX"
    i_knows_rs = one_way or pattern[1] == "K"
    r_knows_rs = pattern[0] == "K"
    init = HandshakeState(
        name,
        initiator=True,
        s=i_s if i_needs_s else None,
        rs=x25519_public(r_s) if i_knows_rs else None,
        rng=seeded_rng(b"i"),
    )
    resp = HandshakeState(
        name,
        initiator=False,
        s=r_s if r_needs_s else None,
        rs=x25519_public(i_s) if r_knows_rs else None,
        rng=seeded_rng(b"r"),
    )
    run_handshake(init, resp)
    assert init.handshake_hash == resp.handshake_hash
    assert init.remote_static == (x25519_public(r_s) if r_needs_s else None)
    assert resp.remote_static == (x25519_public(i_s) if i_needs_s else None)
    (i_send, _), (r_recv, _) = init.split(), resp.split()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"hello")) == b"hello"


def test_ik_initiator_payload_is_encrypted_in_message_one() -> None:
    r_priv, r_pub = generate_keypair(seeded_rng(b"resp-static"))
    init = HandshakeState(IK, initiator=True, s=key("alice"), rs=r_pub)
    resp = HandshakeState(IK, initiator=False, s=r_priv)
    m1 = init.write_message(b"secret hello")
    assert b"secret hello" not in m1
    assert resp.read_message(m1) == b"secret hello"
    assert resp.remote_static == x25519_public(key("alice"))
    assert init.read_message(resp.write_message(b"")) == b""
    assert init.complete and resp.complete


def test_psk_mismatch_fails_handshake() -> None:
    name = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
    init = HandshakeState(name, initiator=True, s=key("a"), psk=key("net-1"))
    resp = HandshakeState(name, initiator=False, s=key("b"), psk=key("net-2"))
    resp.read_message(init.write_message(b""))
    init.read_message(resp.write_message(b""))
    with pytest.raises(HandshakeError):
        resp.read_message(init.write_message(b""))
    assert_aborted(resp)


def test_same_rng_same_bytes() -> None:
    assert xx_messages() == xx_messages()


# --- a peer breaking the handshake ------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data(), which=st.sampled_from([1, 2]))
def test_tampering_any_byte_of_message_2_or_3_fails(data: st.DataObject, which: int) -> None:
    messages = xx_messages()
    target = messages[which]
    index = data.draw(st.integers(0, len(target) - 1), label="byte index")
    flip = data.draw(st.integers(1, 255), label="xor mask")
    tampered = bytearray(target)
    tampered[index] ^= flip

    init, resp = xx_pair()
    resp.read_message(init.write_message(b"one"))
    m2 = resp.write_message(b"two")
    if which == 1:
        with pytest.raises(HandshakeError):
            init.read_message(bytes(tampered))
        assert init.remote_static is None  # an unauthenticated key is never exposed
        assert_aborted(init)
    else:
        init.read_message(m2)
        assert init.write_message(b"three") == target
        with pytest.raises(HandshakeError):
            resp.read_message(bytes(tampered))
        assert resp.remote_static is None
        assert_aborted(resp)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=["zero", "order-8"])
def test_low_order_ephemeral_xx_fails_at_responders_ee(point: bytes) -> None:
    init, resp = xx_pair()
    m1 = init.write_message(b"hi")
    # XX message 1 is "-> e" alone: no DH happens while reading it, so it is accepted...
    assert resp.read_message(point + m1[32:]) == b"hi"
    # ...and the responder's first DH, "ee" while writing message 2, is where it fails.
    with pytest.raises(HandshakeError) as info:
        resp.write_message(b"")
    assert isinstance(info.value.__cause__, RuntimeError)  # libsodium's refusal, chained
    assert_aborted(resp)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=["zero", "order-8"])
def test_low_order_ephemeral_ik_fails_at_responders_es(point: bytes) -> None:
    r_priv, r_pub = generate_keypair(seeded_rng(b"resp"))
    init = HandshakeState(IK, initiator=True, s=key("a"), rs=r_pub, rng=seeded_rng(b"i"))
    resp = HandshakeState(IK, initiator=False, s=r_priv, rng=seeded_rng(b"r"))
    m1 = init.write_message(b"")
    # IK message 1 is "-> e, es, s, ss": "es" runs while reading, before any decryption.
    with pytest.raises(HandshakeError) as info:
        resp.read_message(point + m1[32:])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert_aborted(resp)


def test_wrong_prologue_fails_at_message_2() -> None:
    init, resp = xx_pair(prologue_i=b"kith/1", prologue_r=b"kith/2")
    resp.read_message(init.write_message(b""))  # nothing is authenticated yet
    m2 = resp.write_message(b"")
    with pytest.raises(HandshakeError):
        init.read_message(m2)
    assert_aborted(init)


@pytest.mark.parametrize("length", [0, 31])
def test_short_message_1_fails(length: int) -> None:
    _, resp = xx_pair()
    with pytest.raises(HandshakeError):
        resp.read_message(bytes(length))
    assert_aborted(resp)


def test_truncated_message_2_fails() -> None:
    m2 = xx_messages()[1]
    for cut in (10, 32, 32 + 47, len(m2) - 1):
        init, resp = xx_pair()
        resp.read_message(init.write_message(b"one"))
        resp.write_message(b"two")
        with pytest.raises(HandshakeError):
            init.read_message(m2[:cut])


def test_oversized_handshake_message_from_peer() -> None:
    _, resp = xx_pair()
    with pytest.raises(HandshakeError):
        resp.read_message(bytes(MAX_MESSAGE_LEN + 1))
    assert_aborted(resp)


# --- misuse of the API ------------------------------------------------------------------


def test_writing_out_of_turn_changes_nothing() -> None:
    init, resp = xx_pair()
    h_before = resp.handshake_hash
    with pytest.raises(LocalProtocolError):
        resp.write_message(b"not yet")
    assert resp.handshake_hash == h_before
    assert resp.phase is HandshakePhase.READ and not resp.is_my_turn
    with pytest.raises(LocalProtocolError):
        init.read_message(bytes(32))
    assert init.is_my_turn
    run_handshake(init, resp)
    assert init.handshake_hash == resp.handshake_hash


def test_oversized_payload_write_changes_nothing() -> None:
    init, resp = xx_pair()
    resp.read_message(init.write_message(b""))
    h_before = resp.handshake_hash
    # Message 2 carries e (32) + encrypted s (48) + tagged payload.
    with pytest.raises(LocalProtocolError):
        resp.write_message(bytes(MAX_MESSAGE_LEN - 32 - 48 - TAG_LEN + 1))
    assert resp.handshake_hash == h_before and resp.is_my_turn
    m2 = resp.write_message(bytes(MAX_MESSAGE_LEN - 32 - 48 - TAG_LEN))
    assert len(m2) == MAX_MESSAGE_LEN
    init.read_message(m2)
    resp.read_message(init.write_message(b""))
    assert init.complete and resp.complete


def test_calls_after_completion() -> None:
    init, resp = xx_pair()
    with pytest.raises(LocalProtocolError):
        init.split()  # not complete yet
    run_handshake(init, resp)
    for hs in (init, resp):
        assert hs.phase is HandshakePhase.COMPLETE and not hs.is_my_turn
        with pytest.raises(LocalProtocolError):
            hs.write_message(b"")
        with pytest.raises(LocalProtocolError):
            hs.read_message(b"")
        hs.split()
        with pytest.raises(LocalProtocolError):
            hs.split()  # a second pair would reuse keys and nonces
        assert hs.complete and len(hs.handshake_hash) == 64


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"initiator": True}, "static key"),
        ({"initiator": True, "s": bytes(31)}, "32 bytes"),
        ({"initiator": True, "s": bytes(32), "rs": bytes(32)}, "does not pre-share"),
        ({"initiator": True, "s": bytes(32), "psk": bytes(32)}, "no psk"),
        ({"initiator": True, "s": bytes(32), "e": bytes(33)}, "32 bytes"),
    ],
)
def test_bad_construction(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(LocalProtocolError, match=why):
        HandshakeState(XX, **kwargs)  # type: ignore[arg-type]


def test_ik_initiator_needs_rs() -> None:
    with pytest.raises(LocalProtocolError, match="rs"):
        HandshakeState(IK, initiator=True, s=key("a"))


def test_psk_pattern_needs_psk() -> None:
    with pytest.raises(LocalProtocolError, match="needs a psk"):
        HandshakeState("Noise_NNpsk0_25519_ChaChaPoly_SHA256", initiator=True)


def test_bad_rng_output_is_local_error_and_harmless() -> None:
    hs = HandshakeState("Noise_NN_25519_ChaChaPoly_SHA256", initiator=True, rng=lambda n: b"x")
    with pytest.raises(LocalProtocolError):
        hs.write_message(b"")
    assert hs.is_my_turn


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("Noise_XX_448_ChaChaPoly_BLAKE2b", "DH"),
        ("Noise_XX_25519_AESGCM_BLAKE2b", "cipher"),
        ("Noise_XX_25519_ChaChaPoly_SHA3", "hash"),
        ("Noise_ZZ_25519_ChaChaPoly_BLAKE2b", "pattern"),
        ("Noise_XXfallback_25519_ChaChaPoly_BLAKE2b", "modifier"),
        ("Noise_XXpsk9_25519_ChaChaPoly_BLAKE2b", "modifier"),
        ("Noise_XXpsk0+psk3_25519_ChaChaPoly_BLAKE2b", "modifier"),
        ("Noise_XX_25519_ChaChaPoly", "not a Noise protocol name"),
        ("Noise_xx_25519_ChaChaPoly_BLAKE2b", "pattern"),
    ],
)
def test_unsupported_protocol(name: str, part: str) -> None:
    assert not supports(name)
    with pytest.raises(LocalProtocolError, match=part):
        HandshakeState(name, initiator=True, s=key("a"))


# --- CipherState --------------------------------------------------------------------------


def transport_pair() -> tuple[CipherState, CipherState]:
    init, resp = xx_pair()
    run_handshake(init, resp)
    return init.split()[0], resp.split()[0]


def test_flipped_transport_message_does_not_advance_nonce() -> None:
    send, recv = transport_pair()
    first = send.encrypt_with_ad(b"", b"first")
    second = send.encrypt_with_ad(b"", b"second")
    for i in range(len(first)):
        bad = bytearray(first)
        bad[i] ^= 0x80
        with pytest.raises(DecryptError):
            recv.decrypt_with_ad(b"", bytes(bad))
        assert recv.nonce == 0
    with pytest.raises(DecryptError):
        recv.decrypt_with_ad(b"other ad", first)
    with pytest.raises(DecryptError):
        recv.decrypt_with_ad(b"", first[: TAG_LEN - 1])
    assert recv.decrypt_with_ad(b"", first) == b"first"
    assert recv.decrypt_with_ad(b"", second) == b"second"
    assert recv.nonce == 2


def test_transport_length_limits() -> None:
    send, recv = transport_pair()
    with pytest.raises(LocalProtocolError):
        send.encrypt_with_ad(b"", bytes(MAX_PLAINTEXT_LEN + 1))
    assert send.nonce == 0
    biggest = send.encrypt_with_ad(b"", bytes(MAX_PLAINTEXT_LEN))
    assert len(biggest) == MAX_MESSAGE_LEN
    with pytest.raises(RemoteProtocolError) as info:
        recv.decrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN + 1))
    assert type(info.value) is RemoteProtocolError
    assert recv.nonce == 0
    assert recv.decrypt_with_ad(b"", biggest) == bytes(MAX_PLAINTEXT_LEN)


def test_reserved_nonce() -> None:
    send, recv = transport_pair()
    send.set_nonce(MAX_NONCE - 1)
    recv.set_nonce(MAX_NONCE - 1)
    assert recv.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"last")) == b"last"
    assert send.nonce == MAX_NONCE
    with pytest.raises(LocalProtocolError):
        send.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(LocalProtocolError):
        recv.decrypt_with_ad(b"", bytes(20))
    with pytest.raises(LocalProtocolError):
        send.set_nonce(MAX_NONCE + 1)


def test_rekey_keeps_both_sides_in_step() -> None:
    send, recv = transport_pair()
    before = send.encrypt_with_ad(b"", b"x")
    recv.decrypt_with_ad(b"", before)
    send.rekey()
    recv.rekey()
    after = send.encrypt_with_ad(b"", b"x")
    assert recv.decrypt_with_ad(b"", after) == b"x"
    assert CipherState(bytes(32)).encrypt_with_ad(b"", b"x") != after
    with pytest.raises(LocalProtocolError):
        CipherState().rekey()


def test_keyless_cipher_passes_through() -> None:
    cs = CipherState()
    assert not cs.has_key()
    assert cs.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert cs.decrypt_with_ad(b"ad", b"plain") == b"plain"
    assert "key" not in repr(CipherState(bytes(32))).replace("has_key", "")


def test_keypairs() -> None:
    private, public = generate_keypair(seeded_rng(b"k"))
    assert len(private) == len(public) == 32
    assert x25519_public(private) == public
    with pytest.raises(LocalProtocolError):
        generate_keypair(lambda n: bytes(n - 1))
    with pytest.raises(LocalProtocolError):
        x25519_public(bytes(31))


# --- purity -----------------------------------------------------------------------------


def test_core_imports_no_io() -> None:
    forbidden = {"trio", "socket", "sqlite3", "zeroconf", "time", "random", "asyncio"}
    tree = ast.parse(Path(noise.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & forbidden
