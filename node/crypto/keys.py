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
    """An Ed25519 signing key with the derived X25519 static key for Noise.

    The derived keys are computed once (signing and key agreement happen per
    message and per recipient: re-deriving them each time was measurable).
    """

    seed: bytes = field(repr=False)
    signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    public_key: bytes = field(init=False, repr=False, compare=False)
    x25519_private: bytes = field(init=False, repr=False, compare=False)
    x25519_public: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_LEN:
            raise ValueError(f"an identity seed is {SEED_LEN} bytes, got {len(self.seed)}")
        signing = nacl.signing.SigningKey(self.seed)
        sk = nacl.bindings.crypto_sign_seed_keypair(self.seed)[1]
        public = bytes(signing.verify_key)
        object.__setattr__(self, "signing_key", signing)
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "x25519_private",
                           bytes(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(sk)))
        object.__setattr__(self, "x25519_public", ed25519_to_x25519_public(public))

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def peer_id(self) -> PeerId:
        return peer_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)
