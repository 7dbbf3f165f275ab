"""Signal-style Sender Keys for group messages (pure: PyNaCl and hashlib/hmac only).

Theory of operation
-------------------
In a group each member encrypts a message *once*, with its own **sender key**, and every
other member can decrypt it. A sender key exists per (group, author, epoch) and has two
halves:

* a **symmetric chain**: a 32-byte chain key ``ck`` and the index of the message key it
  produces next. Each message consumes one step of a one-way hash ratchet::

      mk_i     = HMAC-SHA256(ck_i, 0x01)     message key for index i
      ck_(i+1) = HMAC-SHA256(ck_i, 0x02)     chain key for index i + 1

  Because HMAC is one-way, holding ``ck_i`` gives every key from ``i`` on and none before:
  a member who joins late (``OwnSenderKey.receiver_state``) cannot read the past, and an
  author who forgets old chain keys has forward secrecy inside the epoch.
* an **Ed25519 signing key pair**: the author signs what it sends, so members (who all hold
  the chain key and could therefore forge ciphertexts) can tell who wrote a message.

Each message is XChaCha20-Poly1305 (IETF) under ``mk_i``. A chain made in this process
(``fresh``) uses the all-zero 24-byte nonce: each of its message keys encrypts exactly one
message (the chain never yields an index twice, the author persists the advanced chain before
a ciphertext leaves, and no other copy of the node can hold a chain that never left this
process but for its store), and a key used once needs no nonce to vary. A chain read back
from disk might also be running in a restored copy of the node, so it keeps a random nonce
per message. The blob is ``nonce || ciphertext || tag``; a body whose nonce is all zero
travels without it (``node.group.bodies``). The index travels beside the blob and the
caller binds group, author, epoch and index into the associated data, so a ciphertext cannot
be replayed under another index or in another context.

Receivers must cope with loss and reordering. ``decrypt`` advances the chain to the message's
index and keeps the message keys it stepped over ("skipped keys", at most ``MAX_SKIP``, the
oldest dropped first) so late messages still decrypt, each exactly once: a used key is
removed, so a replayed index fails. A message claiming to be more than ``MAX_JUMP`` ahead is
refused before any hashing: otherwise one forged header could make us compute an unbounded
number of HMACs. (Callers should also check the author's signature *before* decrypting, so
only a real member can make us do even ``MAX_JUMP`` steps.)

Everything here is a pure function over frozen dataclasses. ``encrypt`` returns the advanced
author state, which the caller must persist *before* sending (a crash must never lead to a
message key being used twice); ``decrypt`` returns a new receiver state only on success, so
a failed authentication leaves nothing half-advanced to store.

Distribution: ``seal_for`` encrypts (chain key, index) to one member's X25519 key with
libsodium's sealed box. A sealed box is anonymous (anyone can seal to anyone), so it gives
confidentiality only; the distribution message that carries the sender key's public signing
key must be signed by the author's identity key, and so must what authenticates the sealed
blobs: either the blobs themselves (inside the signed event) or, when each blob travels
apart to its one recipient, a salted ``commitment`` to the sealed payload that the signed
event carries and every recipient checks its opened blob against (``matches``). Everybody
then holds the same chain state, or knows it was given a wrong one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

from node.crypto.keys import IdentityKey
from node.errors import DecryptError, LocalProtocolError, RemoteProtocolError

Rng = Callable[[int], bytes]

KEY_LEN = 32
SEED_LEN = 32
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
NONCE_LEN = 24  # XChaCha20-Poly1305
#: The nonce of every message this version encrypts (each message key is used once).
ZERO_NONCE = bytes(NONCE_LEN)
TAG_LEN = 16
MAX_SKIP = 2000
MAX_JUMP = 5000
MAX_INDEX = 2**64 - 1  # the index is a u64 in the sealed encoding; this value is never used

# Sealed sender-key payload: version byte, chain key, big-endian u64 index (41 bytes).
SEALED_VERSION = 1
_SEALED_FORMAT = ">B32sQ"
SEALED_PAYLOAD_LEN = struct.calcsize(_SEALED_FORMAT)
SEALED_OVERHEAD = 48  # crypto_box_SEALBYTES: ephemeral public key (32) + Poly1305 tag (16)

COMMIT_SALT_LEN = 16
COMMIT_LEN = 32
_COMMIT_PERSON = b"kith-senderkey"

_MESSAGE_KEY_LABEL = b"\x01"
_CHAIN_KEY_LABEL = b"\x02"


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def message_key(ck: bytes) -> bytes:
    """The message key a chain key produces: ``HMAC-SHA256(ck, 0x01)``."""
    return _hmac_sha256(_check_len(ck, KEY_LEN, "chain key"), _MESSAGE_KEY_LABEL)


def next_chain_key(ck: bytes) -> bytes:
    """The next chain key: ``HMAC-SHA256(ck, 0x02)``."""
    return _hmac_sha256(_check_len(ck, KEY_LEN, "chain key"), _CHAIN_KEY_LABEL)


def _check_len(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise LocalProtocolError(f"{what} must be {length} bytes, got {len(value)}")
    return bytes(value)


def _check_index(index: int) -> None:
    if not 0 <= index < MAX_INDEX:
        raise LocalProtocolError(f"sender key index {index} is out of range")


@dataclass(frozen=True, slots=True)
class SenderKeyState:
    """What a *receiver* holds for one (author, epoch) sender key."""

    chain_key: bytes = field(repr=False)
    index: int  # index of the message key chain_key produces next
    signing_public: bytes
    # (index, message key) pairs, oldest first, at most MAX_SKIP, all below ``index``.
    skipped: tuple[tuple[int, bytes], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _check_len(self.chain_key, KEY_LEN, "chain key")
        _check_len(self.signing_public, PUBLIC_KEY_LEN, "signing public key")
        _check_index(self.index)
        if len(self.skipped) > MAX_SKIP:
            raise LocalProtocolError(f"{len(self.skipped)} skipped keys exceed {MAX_SKIP}")


@dataclass(frozen=True, slots=True)
class OwnSenderKey:
    """What the *author* holds for its current epoch: its chain and its signing seed."""

    chain_key: bytes = field(repr=False)
    index: int
    signing_seed: bytes = field(repr=False)
    #: Made by ``generate`` in this process (never read back from a store): only such a
    #: chain can be in no other copy of this node, so only it encrypts under the zero nonce.
    #: Not persisted: a key loaded from disk (perhaps a restored backup, which another
    #: copy may also be using) is not fresh and draws a random nonce per message.
    fresh: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        _check_len(self.chain_key, KEY_LEN, "chain key")
        _check_len(self.signing_seed, SEED_LEN, "signing seed")
        _check_index(self.index)

    @classmethod
    def generate(cls, rng: Rng = nacl.utils.random) -> OwnSenderKey:
        """A fresh sender key at index 0 (64 bytes from ``rng``)."""
        chain_key = _check_len(rng(KEY_LEN), KEY_LEN, "rng output")
        seed = _check_len(rng(SEED_LEN), SEED_LEN, "rng output")
        return cls(chain_key=chain_key, index=0, signing_seed=seed, fresh=True)

    @property
    def signing_public(self) -> bytes:
        return _keypair(self.signing_seed)[0]

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature of ``message``."""
        signed: bytes = nacl.bindings.crypto_sign(message, _keypair(self.signing_seed)[1])
        return signed[:SIGNATURE_LEN]

    def receiver_state(self) -> SenderKeyState:
        """The state to give a member joining now: it reads from ``self.index`` on."""
        return SenderKeyState(
            chain_key=self.chain_key, index=self.index, signing_public=self.signing_public
        )


@functools.lru_cache(maxsize=16)
def _keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, 64-byte secret key) of a signing seed. Every message of an epoch signs
    with the same seed, and deriving the pair costs about as much as the signature itself:
    the author's few current seeds are kept (they are in memory anyway, in its key state)."""
    public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    return bytes(public), bytes(secret)


def encrypt(
    own: OwnSenderKey, plaintext: bytes, ad: bytes, rng: Rng = nacl.utils.random
) -> tuple[OwnSenderKey, int, bytes]:
    """Encrypt one message with the next message key.

    Returns ``(advanced_key, index_used, nonce || ciphertext)``. Persist ``advanced_key``
    before sending: the old state must never encrypt again. The nonce is ``ZERO_NONCE`` for
    a ``fresh`` key (its message keys exist in this process only, each used once), else 24
    bytes from ``rng`` (a chain read from disk may also be in a restored copy of this node,
    which would use the same message keys: random nonces keep that safe, as they always did).
    """
    if own.index + 1 >= MAX_INDEX:
        raise LocalProtocolError("sender key exhausted: rotate to a new epoch")
    nonce = ZERO_NONCE if own.fresh else _check_len(rng(NONCE_LEN), NONCE_LEN, "rng output")
    ciphertext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, ad, nonce, message_key(own.chain_key)
    )
    advanced = replace(own, chain_key=next_chain_key(own.chain_key), index=own.index + 1)
    return advanced, own.index, nonce + ciphertext


def _open(mk: bytes, blob: bytes, ad: bytes) -> bytes:
    try:
        plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[NONCE_LEN:], ad, blob[:NONCE_LEN], mk
        )
    except nacl.exceptions.CryptoError as exc:
        raise DecryptError("group message failed authentication") from exc
    return plaintext


def decrypt(
    state: SenderKeyState, index: int, blob: bytes, ad: bytes
) -> tuple[SenderKeyState, bytes]:
    """Decrypt the message at ``index``; return ``(new_state, plaintext)``.

    Raises ``DecryptError`` (and returns no state) if the blob is malformed, its key was
    already used or dropped, its index is more than ``MAX_JUMP`` ahead, or authentication
    fails. ``state`` is immutable, so on error the caller simply keeps it.
    """
    if len(blob) < NONCE_LEN + TAG_LEN:
        raise DecryptError(f"group message is {len(blob)} bytes, shorter than nonce and tag")
    if not 0 <= index < MAX_INDEX - 1:  # encrypt never uses MAX_INDEX - 1 or above
        raise DecryptError(f"group message index {index} is out of range")

    if index < state.index:
        keys = dict(state.skipped)
        mk = keys.get(index)
        if mk is None:
            raise DecryptError(f"message key {index} already used or too old")
        plaintext = _open(mk, blob, ad)
        remaining = tuple(entry for entry in state.skipped if entry[0] != index)
        return replace(state, skipped=remaining), plaintext

    gap = index - state.index
    if gap > MAX_JUMP:
        # Refuse before hashing anything: the index is attacker-chosen.
        raise DecryptError(
            f"group message index {index} is {gap} ahead of {state.index}, "
            f"more than the {MAX_JUMP} allowed"
        )
    # Step over the gap. Only the newest MAX_SKIP skipped keys survive, so message keys
    # for the indices that would be dropped at once are not even computed.
    ck = state.chain_key
    first_kept = index - MAX_SKIP
    new_skipped: list[tuple[int, bytes]] = []
    for i in range(state.index, index):
        if i >= first_kept:
            new_skipped.append((i, message_key(ck)))
        ck = next_chain_key(ck)
    plaintext = _open(message_key(ck), blob, ad)
    skipped = (state.skipped + tuple(new_skipped))[-MAX_SKIP:]
    return replace(state, chain_key=next_chain_key(ck), index=index + 1, skipped=skipped), plaintext


def verify(signing_public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``signing_public``.

    Any malformed input (wrong lengths, a key that is not a point) is simply ``False``.
    """
    try:
        nacl.signing.VerifyKey(bytes(signing_public)).verify(bytes(message), bytes(signature))
    except nacl.exceptions.CryptoError:
        return False
    return True


def encode_sealed_payload(state: SenderKeyState) -> bytes:
    """The 41-byte plaintext sealed to a member: version, chain key, u64 index."""
    return struct.pack(_SEALED_FORMAT, SEALED_VERSION, state.chain_key, state.index)


def decode_sealed_payload(payload: bytes, signing_public: bytes) -> SenderKeyState:
    """Inverse of ``encode_sealed_payload``; ``DecryptError`` if malformed."""
    if len(payload) != SEALED_PAYLOAD_LEN:
        raise DecryptError(f"sealed sender key is {len(payload)} bytes, not {SEALED_PAYLOAD_LEN}")
    version, chain_key, index = struct.unpack(_SEALED_FORMAT, payload)
    if version != SEALED_VERSION:
        raise DecryptError(f"sealed sender key has unknown version {version}")
    if index >= MAX_INDEX:
        raise DecryptError(f"sealed sender key index {index} is out of range")
    if len(signing_public) != PUBLIC_KEY_LEN:
        raise DecryptError(f"sender signing key is {len(signing_public)} bytes, not 32")
    return SenderKeyState(chain_key=chain_key, index=index, signing_public=bytes(signing_public))


def commitment(state: SenderKeyState, salt: bytes) -> bytes:
    """``BLAKE2b(0x01 || ck || index, digest_size=32, key=salt, person="kith-senderkey")``:
    binds a committed SENDER_KEY to the one chain state every recipient gets."""
    salt = _check_len(salt, COMMIT_SALT_LEN, "commitment salt")
    return hashlib.blake2b(encode_sealed_payload(state), digest_size=COMMIT_LEN, key=salt,
                           person=_COMMIT_PERSON).digest()


def matches(state: SenderKeyState, salt: bytes, commit: bytes) -> bool:
    """Whether ``state`` (opened from a sealed copy) is the one ``commit`` commits to."""
    if len(salt) != COMMIT_SALT_LEN or len(commit) != COMMIT_LEN:
        return False
    return hmac.compare_digest(commitment(state, salt), commit)


def seal_for(recipient_x25519_public: bytes, state: SenderKeyState) -> bytes:
    """Seal (chain key, index) to one member's X25519 key (``crypto_box_seal``).

    The skipped keys and the signing public key are not included: a new holder needs
    neither the past nor a secret copy of a public key. The sealed box's ephemeral key
    comes from libsodium's own CSPRNG (libsodium offers no way to inject it).
    """
    recipient = _check_len(recipient_x25519_public, PUBLIC_KEY_LEN, "recipient X25519 key")
    try:
        sealed: bytes = nacl.bindings.crypto_box_seal(encode_sealed_payload(state), recipient)
    except nacl.exceptions.CryptoError as exc:
        # libsodium refuses a low-order key: that member's identity key is unusable, which
        # is its problem (drop that member), not a bug of ours.
        raise RemoteProtocolError("recipient X25519 key is a low-order point") from exc
    return sealed


def open_sealed(identity: IdentityKey, blob: bytes, signing_public: bytes) -> SenderKeyState:
    """Open a sender key sealed to ``identity``; ``DecryptError`` if forged or malformed."""
    if len(blob) != SEALED_OVERHEAD + SEALED_PAYLOAD_LEN:
        raise DecryptError(f"sealed sender key blob is {len(blob)} bytes")
    try:
        payload: bytes = nacl.bindings.crypto_box_seal_open(
            bytes(blob), identity.x25519_public, identity.x25519_private
        )
    except nacl.exceptions.CryptoError as exc:
        raise DecryptError("sealed sender key could not be opened") from exc
    return decode_sealed_payload(payload, signing_public)
