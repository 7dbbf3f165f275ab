"""Pairwise mode: a message encrypted separately for each recipient (pure, PyNaCl only).

Theory of operation
-------------------
Sender keys (``sender_keys.py``) encrypt once for the whole group. Pairwise mode is the
alternative for messages that must not be readable by anyone holding the group's sender
keys: the author encrypts the plaintext once *per recipient*, with a key only the two of
them share, derived from their long-term identity keys (no extra key exchange needed).

Construction, for sender S and recipient R (both Ed25519 identity keys)::

    s_x  = X25519 private key of S   (libsodium crypto_sign_ed25519_sk_to_curve25519)
    R_x  = X25519 public key of R    (libsodium crypto_sign_ed25519_pk_to_curve25519)
    k    = crypto_box_beforenm(R_x, s_x)          # HSalsa20(X25519(s_x, R_x)), 32 bytes
    aad  = "kith/1 pairwise" 0x00 || S_pub (32) || R_pub (32) || ad
    blob = nonce (24 random bytes) || XChaCha20-Poly1305-IETF(k, nonce, aad, plaintext)

``crypto_box`` itself takes no associated data, so we take only its key agreement
(``beforenm``) and use that key with the IETF AEAD, which does. ``k`` is the same in
both directions (R computes it as ``beforenm(S_x, r_x)``), so the associated data names
the sender and the recipient, in that order: a message cannot be reflected back to its
author or replayed as one from R to S. ``ad`` is the caller's context (group, event id).
Nonces are random: 192 bits make a collision negligible however many messages are sent.

This is static-static key agreement: there is no forward secrecy, and either party could
have produced a given ciphertext (deniable towards third parties, authentic between the
two). Authorship towards the *group* comes from the author's signed event, which carries a
``commitment`` to the plaintext: every recipient checks that what it decrypted matches
that one commitment, so the author cannot tell different members different things.

    commitment = BLAKE2b-256(plaintext, key=salt (16 random bytes), person="kith-pairwise")

The salt travels in the signed event; it keeps the commitment from being a plain hash
that anyone could test guesses of a short message against.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
import nacl.utils

from node.crypto.keys import IdentityKey
from node.errors import DecryptError, LocalProtocolError, RemoteProtocolError

Rng = Callable[[int], bytes]

PUBLIC_KEY_LEN = 32
NONCE_LEN = 24
TAG_LEN = 16
SALT_LEN = 16
COMMITMENT_LEN = 32
AD_PREFIX = b"kith/1 pairwise\x00"
COMMITMENT_PERSON = b"kith-pairwise"


def _x25519_public(identity_public: bytes) -> bytes:
    """The X25519 form of an Ed25519 identity key; ``ValueError`` if it has none."""
    if len(identity_public) != PUBLIC_KEY_LEN:
        raise ValueError(f"an identity key is {PUBLIC_KEY_LEN} bytes, got {len(identity_public)}")
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(identity_public)))
    except nacl.exceptions.CryptoError as exc:
        raise ValueError("identity key is not a valid Ed25519 public key") from exc


def _shared_key(own: IdentityKey, peer_identity_public: bytes) -> bytes:
    """``crypto_box_beforenm`` between our identity and the peer's; ``ValueError`` if unusable."""
    return _pair_key(own.x25519_private, bytes(peer_identity_public))


@functools.lru_cache(maxsize=4096)
def _pair_key(own_x25519_private: bytes, peer_identity_public: bytes) -> bytes:
    """``_shared_key``, remembered: the same pair meets once per message (a fanout of N
    pairwise copies, or every message a member reads from one author), and the two
    conversions and the X25519 agreement cost more than the encryption itself. Only
    successes are kept (an exception is raised again each time)."""
    peer_x = _x25519_public(peer_identity_public)
    try:
        return bytes(nacl.bindings.crypto_box_beforenm(peer_x, own_x25519_private))
    except nacl.exceptions.CryptoError as exc:
        # libsodium refuses an all-zero shared secret (a low-order peer key).
        raise ValueError("identity key is a low-order point") from exc


def _aad(sender_public: bytes, recipient_public: bytes, ad: bytes) -> bytes:
    return AD_PREFIX + sender_public + recipient_public + ad


def encrypt_for(
    sender: IdentityKey,
    recipient_identity_public: bytes,
    plaintext: bytes,
    ad: bytes,
    rng: Rng = nacl.utils.random,
) -> bytes:
    """Encrypt ``plaintext`` for one recipient; returns ``nonce || ciphertext || tag``.

    ``RemoteProtocolError`` if the recipient's identity key is not a usable public key.
    """
    try:
        key = _shared_key(sender, recipient_identity_public)
    except ValueError as exc:
        raise RemoteProtocolError(f"cannot encrypt for this recipient: {exc}") from exc
    nonce = rng(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise LocalProtocolError(f"rng output must be {NONCE_LEN} bytes, got {len(nonce)}")
    aad = _aad(sender.public_key, bytes(recipient_identity_public), ad)
    ciphertext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce, key
    )
    return nonce + ciphertext


def decrypt_from(
    recipient: IdentityKey, sender_identity_public: bytes, blob: bytes, ad: bytes
) -> bytes:
    """Decrypt a blob ``sender`` made with ``encrypt_for``; ``DecryptError`` on any failure."""
    if len(blob) < NONCE_LEN + TAG_LEN:
        raise DecryptError(f"pairwise message is {len(blob)} bytes, shorter than nonce and tag")
    try:
        key = _shared_key(recipient, sender_identity_public)
    except ValueError as exc:
        raise DecryptError(f"cannot decrypt from this sender: {exc}") from exc
    aad = _aad(bytes(sender_identity_public), recipient.public_key, ad)
    try:
        plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[NONCE_LEN:], aad, blob[:NONCE_LEN], key
        )
    except nacl.exceptions.CryptoError as exc:
        raise DecryptError("pairwise message failed authentication") from exc
    return plaintext


def new_salt(rng: Rng = nacl.utils.random) -> bytes:
    """A fresh 16-byte commitment salt."""
    salt = rng(SALT_LEN)
    if len(salt) != SALT_LEN:
        raise LocalProtocolError(f"rng output must be {SALT_LEN} bytes, got {len(salt)}")
    return salt


def commitment(plaintext: bytes, salt: bytes) -> bytes:
    """32-byte BLAKE2b of ``plaintext`` keyed with ``salt``, personalised ``kith-pairwise``."""
    if len(salt) != SALT_LEN:
        raise LocalProtocolError(f"a commitment salt is {SALT_LEN} bytes, got {len(salt)}")
    return hashlib.blake2b(
        plaintext, digest_size=COMMITMENT_LEN, key=salt, person=COMMITMENT_PERSON
    ).digest()


def verify_commitment(plaintext: bytes, salt: bytes, expected: bytes) -> bool:
    """Whether ``expected`` commits to ``plaintext`` under ``salt`` (malformed: ``False``)."""
    if len(salt) != SALT_LEN or len(expected) != COMMITMENT_LEN:
        return False
    return hmac.compare_digest(commitment(plaintext, salt), expected)
