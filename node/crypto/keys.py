"""The node's long-term identity key (pure: no file access here).

The identity is an Ed25519 key pair. Its public key is the node's ``PeerId``.
The Noise static key is *derived* from it with libsodium's Ed25519-to-Curve25519
conversion, so one key pair serves both signing (events, later) and the Noise
handshake, and a peer id determines the Noise static key: a peer that proves
possession of the static key in a handshake proves it owns the peer id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from node.errors import HandshakeError
from node.ids import PeerId, peer_id

SEED_LEN = 32


def ed25519_to_x25519_public(public_key: bytes) -> bytes:
    """X25519 form of an Ed25519 public key; ``HandshakeError`` if it is not a valid point."""
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key))
    except (nacl.exceptions.CryptoError, RuntimeError, ValueError) as exc:
        raise HandshakeError("identity key is not a valid Ed25519 public key") from exc


@dataclass(frozen=True, slots=True)
class IdentityKey:
    """An Ed25519 signing key with the derived X25519 static key for Noise."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_LEN:
            raise ValueError(f"an identity seed is {SEED_LEN} bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> PeerId:
        return peer_id(self.public_key)

    @property
    def x25519_private(self) -> bytes:
        sk = nacl.bindings.crypto_sign_seed_keypair(self.seed)[1]
        return bytes(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(sk))

    @property
    def x25519_public(self) -> bytes:
        return ed25519_to_x25519_public(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)
