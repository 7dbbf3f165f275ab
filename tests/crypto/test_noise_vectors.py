"""Noise against the cacophony test vectors: every byte of every message must match."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from node.crypto.noise import CipherState, HandshakeState, supports, x25519_public
from tests.vectorfiles import shared_vector_path, vector_path, vendored_vector_path

Vector = dict[str, Any]


def _load_vectors() -> list[Vector]:
    with vector_path("noise/cacophony.json").open(encoding="utf-8") as f:
        vectors: list[Vector] = json.load(f)["vectors"]
    return vectors


VECTORS = _load_vectors()
SUPPORTED = [v for v in VECTORS if supports(v["protocol_name"])]


def _fixed_rng(key: bytes) -> Callable[[int], bytes]:
    """An rng that hands out ``key`` exactly once, as the ephemeral private key."""
    keys = [key]

    def rng(n: int) -> bytes:
        assert n == len(key)
        return keys.pop()

    return rng


def _side(vector: Vector, side: str, *, initiator: bool, ephemeral_via: str) -> HandshakeState:
    def opt(field: str) -> bytes | None:
        return bytes.fromhex(vector[field]) if field in vector else None

    ephemeral = bytes.fromhex(vector[f"{side}_ephemeral"])
    kwargs: dict[str, Any] = (
        {"e": ephemeral} if ephemeral_via == "e" else {"rng": _fixed_rng(ephemeral)}
    )
    return HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(vector[f"{side}_prologue"]),
        s=opt(f"{side}_static"),
        rs=opt(f"{side}_remote_static"),
        **kwargs,
    )


def test_file_has_a_supported_xx_blake2b_vector() -> None:
    # Guards against the parametrized test below passing vacuously on an empty list.
    names = [v["protocol_name"] for v in SUPPORTED]
    assert "Noise_XX_25519_ChaChaPoly_BLAKE2b" in names


def test_the_known_vectors_are_all_supported() -> None:
    names = {v["protocol_name"] for v in VECTORS}
    expected = {
        "Noise_XX_25519_ChaChaPoly_BLAKE2b",
        "Noise_XX_25519_ChaChaPoly_SHA256",
        "Noise_IK_25519_ChaChaPoly_BLAKE2b",
    }
    assert expected <= names
    assert all(supports(name) for name in expected)


@pytest.mark.parametrize("ephemeral_via", ["e", "rng"])
@pytest.mark.parametrize("vector", SUPPORTED, ids=[v["protocol_name"] for v in SUPPORTED])
def test_vector(vector: Vector, ephemeral_via: str) -> None:
    init = _side(vector, "init", initiator=True, ephemeral_via=ephemeral_via)
    resp = _side(vector, "resp", initiator=False, ephemeral_via=ephemeral_via)
    transport: tuple[CipherState, CipherState, CipherState, CipherState] | None = None

    for i, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        initiator_sends = i % 2 == 0  # messages alternate, initiator first
        if transport is None:
            writer, reader = (init, resp) if initiator_sends else (resp, init)
            assert writer.is_my_turn and not reader.is_my_turn
            ciphertext = writer.write_message(payload)
            assert ciphertext.hex() == expected.hex(), f"handshake message {i}"
            assert reader.read_message(ciphertext) == payload
            if init.complete:
                assert resp.complete
                assert init.handshake_hash.hex() == vector["handshake_hash"]
                assert resp.handshake_hash.hex() == vector["handshake_hash"]
                i_send, i_recv = init.split()
                r_recv, r_send = resp.split()
                transport = (i_send, i_recv, r_send, r_recv)
        else:
            i_send, i_recv, r_send, r_recv = transport
            # The initiator encrypts on the first split cipher, the responder on the second.
            enc, dec = (i_send, r_recv) if initiator_sends else (r_send, i_recv)
            ciphertext = enc.encrypt_with_ad(b"", payload)
            assert ciphertext.hex() == expected.hex(), f"transport message {i}"
            assert dec.decrypt_with_ad(b"", ciphertext) == payload

    assert transport is not None, "the vector never completed its handshake"
    init_static = bytes.fromhex(vector["init_static"])
    resp_static = bytes.fromhex(vector["resp_static"])
    assert init.remote_static == x25519_public(resp_static) == resp.local_static_public
    assert resp.remote_static == x25519_public(init_static) == init.local_static_public


@pytest.mark.parametrize("name", ["cacophony.json", "SOURCE.md"])
def test_vendored_copy_matches_shared(name: str) -> None:
    vendored = vendored_vector_path(f"noise/{name}")
    assert vendored.is_file(), f"{vendored} is missing: copy it from shared/vectors/noise/"
    shared = shared_vector_path(f"noise/{name}")
    if shared is not None:  # only comparable when shared/ sits beside the clone
        assert vendored.read_bytes() == shared.read_bytes(), (
            f"{vendored} differs from {shared}: re-copy it verbatim"
        )
