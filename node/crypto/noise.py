"""The Noise Protocol Framework (revision 34), sans-I/O, on PyNaCl and hashlib only.

Theory of operation
-------------------
Noise is three nested objects, and this module keeps the spec's names for them:

* ``CipherState`` holds a key and a 64-bit counter nonce and does AEAD (ChaChaPoly).
  After the handshake each direction of a session is one ``CipherState``.
* ``_SymmetricState`` holds the chaining key ``ck`` and the transcript hash ``h``; every
  public key, DH result and ciphertext of the handshake is folded into them.
* ``HandshakeState`` interprets a handshake *pattern* (a table of tokens, below) one
  message at a time: ``write_message(payload) -> bytes`` and ``read_message(bytes) ->
  payload``. It never touches a socket: bytes go in and come out, the driver moves them.

The handshake is a small state machine (``HandshakePhase``). ``_ALLOWED`` says which call
each phase accepts; any other call raises ``LocalProtocolError`` *before* anything is
mutated, so misuse is harmless. Anything that goes wrong once a message is half-processed
(a bad tag, a low-order key, a short message) moves the handshake to ``FAILED`` for good:
Noise aborts a failed handshake, and a transcript that has absorbed half a message cannot
be resumed.

Errors: the peer breaking the handshake is ``HandshakeError``; a transport message failing
authentication is ``DecryptError``; an oversized transport message from the peer is
``RemoteProtocolError``; calling us wrongly is ``LocalProtocolError``.

Randomness is injected (``rng``), so the core stays deterministic under test; the only
random value the handshake needs is the ephemeral private key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import nacl.bindings
import nacl.exceptions
import nacl.utils

from node.errors import DecryptError, HandshakeError, LocalProtocolError, RemoteProtocolError

MAX_MESSAGE_LEN = 65535
TAG_LEN = 16
DH_LEN = 32
KEY_LEN = 32
MAX_PLAINTEXT_LEN = MAX_MESSAGE_LEN - TAG_LEN
# Noise reserves the last nonce (it is what REKEY uses), so 2**64 - 1 is never sent.
MAX_NONCE = 2**64 - 1

Rng = Callable[[int], bytes]


def _check_len(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise LocalProtocolError(f"{what} must be {length} bytes, got {len(value)}")
    return bytes(value)


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (clamping is libsodium's)."""
    public: bytes = nacl.bindings.crypto_scalarmult_base(_check_len(private, DH_LEN, "private"))
    return public


def generate_keypair(rng: Rng = nacl.utils.random) -> tuple[bytes, bytes]:
    """A fresh X25519 key pair ``(private, public)`` from ``rng``."""
    private = _check_len(rng(DH_LEN), DH_LEN, "rng output")
    return private, x25519_public(private)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        shared: bytes = nacl.bindings.crypto_scalarmult(private, public)
    except RuntimeError as exc:
        # libsodium refuses an all-zero result, which only a low-order (or zero) public
        # key produces. Such a key contributes nothing secret: the peer is misbehaving.
        raise HandshakeError("peer sent a low-order X25519 public key") from exc
    return shared


# --- ChaChaPoly -------------------------------------------------------------------------


def _nonce(n: int) -> bytes:
    return bytes(4) + n.to_bytes(8, "little")  # 32 zero bits, then n little-endian


def _aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    out: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, ad, _nonce(n), key
    )
    return out


class CipherState:
    """One direction of encryption: a key (maybe none yet) and a counter nonce."""

    __slots__ = ("_k", "_n")

    def __init__(self, key: bytes | None = None) -> None:
        self._k: bytes | None = None
        self._n = 0
        if key is not None:
            self.initialize_key(key)

    def __repr__(self) -> str:  # never show the key
        return f"CipherState(has_key={self.has_key()}, nonce={self._n})"

    def initialize_key(self, key: bytes) -> None:
        """Set a new 32-byte key and reset the nonce to zero."""
        self._k = _check_len(key, KEY_LEN, "cipher key")
        self._n = 0

    def has_key(self) -> bool:
        return self._k is not None

    def set_nonce(self, n: int) -> None:
        """Set the next nonce (for protocols that carry explicit nonces)."""
        if not 0 <= n <= MAX_NONCE:
            raise LocalProtocolError(f"nonce {n} is outside 0..2**64-1")
        self._n = n

    @property
    def nonce(self) -> int:
        """The nonce the next encrypt or decrypt will use."""
        return self._n

    def _check_nonce(self) -> None:
        if self._n >= MAX_NONCE:
            raise LocalProtocolError("nonce space exhausted: start a new session")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt and advance the nonce; without a key, return ``plaintext`` as Noise says."""
        if self._k is None:
            if len(plaintext) > MAX_MESSAGE_LEN:
                raise LocalProtocolError(f"message of {len(plaintext)} bytes exceeds 65535")
            return bytes(plaintext)
        if len(plaintext) > MAX_PLAINTEXT_LEN:
            raise LocalProtocolError(
                f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT_LEN}"
            )
        self._check_nonce()
        ciphertext = _aead_encrypt(self._k, self._n, bytes(ad), bytes(plaintext))
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and advance the nonce; on failure raise ``DecryptError``, nonce unchanged."""
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise RemoteProtocolError(f"peer sent a {len(ciphertext)}-byte Noise message")
        if self._k is None:
            return bytes(ciphertext)
        self._check_nonce()
        if len(ciphertext) < TAG_LEN:
            raise DecryptError(f"ciphertext of {len(ciphertext)} bytes is shorter than a tag")
        try:
            plaintext: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                bytes(ciphertext), bytes(ad), _nonce(self._n), self._k
            )
        except nacl.exceptions.CryptoError as exc:
            raise DecryptError("message failed authentication") from exc
        self._n += 1
        return plaintext

    def rekey(self) -> None:
        """Replace the key by a one-way function of itself (the nonce is kept)."""
        if self._k is None:
            raise LocalProtocolError("rekey on a CipherState without a key")
        self._k = _aead_encrypt(self._k, MAX_NONCE, b"", bytes(KEY_LEN))[:KEY_LEN]


# --- Hash, HKDF and SymmetricState ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hash:
    name: str  # hashlib's name; hmac uses the hash's own block size (128 for BLAKE2b)
    hashlen: int

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.name, data).digest()

    def hkdf(self, ck: bytes, ikm: bytes, outputs: int) -> list[bytes]:
        # Noise section 4.3: HKDF with the chaining key as salt and an empty info.
        temp_key = hmac.digest(ck, ikm, self.name)
        out = [hmac.digest(temp_key, b"\x01", self.name)]
        for i in range(2, outputs + 1):
            out.append(hmac.digest(temp_key, out[-1] + bytes([i]), self.name))
        return out


_HASHES = {
    "SHA256": _Hash("sha256", 32),
    "SHA512": _Hash("sha512", 64),
    "BLAKE2s": _Hash("blake2s", 32),
    "BLAKE2b": _Hash("blake2b", 64),
}


class _SymmetricState:
    __slots__ = ("_hash", "cipher", "ck", "h")

    def __init__(self, hash_: _Hash, protocol_name: bytes) -> None:
        self._hash = hash_
        if len(protocol_name) <= hash_.hashlen:
            self.h = protocol_name.ljust(hash_.hashlen, b"\x00")
        else:
            self.h = hash_.digest(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self._hash.hkdf(self.ck, ikm, 2)
        self.cipher.initialize_key(temp_k[:KEY_LEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash.digest(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = self._hash.hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher.initialize_key(temp_k[:KEY_LEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        except DecryptError as exc:
            raise HandshakeError(f"handshake message failed authentication: {exc}") from exc
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self._hash.hkdf(self.ck, b"", 2)
        self.ck = b""  # the chaining key must not outlive the handshake
        return CipherState(k1[:KEY_LEN]), CipherState(k2[:KEY_LEN])


# --- Patterns ---------------------------------------------------------------------------

_Tokens = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Pattern:
    initiator_s_known: bool  # pre-message "-> s": the responder knows it in advance
    responder_s_known: bool  # pre-message "<- s": the initiator knows it in advance
    messages: tuple[_Tokens, ...]  # initiator first, then alternating


# Noise sections 7.4 (one-way) and 7.5 (interactive fundamental patterns).
_PATTERNS: dict[str, _Pattern] = {
    "N": _Pattern(False, True, (("e", "es"),)),
    "K": _Pattern(True, True, (("e", "es", "ss"),)),
    "X": _Pattern(False, True, (("e", "es", "s", "ss"),)),
    "NN": _Pattern(False, False, (("e",), ("e", "ee"))),
    "NK": _Pattern(False, True, (("e", "es"), ("e", "ee"))),
    "NX": _Pattern(False, False, (("e",), ("e", "ee", "s", "es"))),
    "KN": _Pattern(True, False, (("e",), ("e", "ee", "se"))),
    "KK": _Pattern(True, True, (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": _Pattern(True, False, (("e",), ("e", "ee", "se", "s", "es"))),
    "XN": _Pattern(False, False, (("e",), ("e", "ee"), ("s", "se"))),
    "XK": _Pattern(False, True, (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": _Pattern(False, False, (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IN": _Pattern(False, False, (("e", "s"), ("e", "ee", "se"))),
    "IK": _Pattern(False, True, (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": _Pattern(False, False, (("e", "s"), ("e", "ee", "se", "s", "es"))),
}

_PATTERN_RE = re.compile(r"([A-Z][A-Z0-9]*)((?:[a-z][a-z0-9]*)(?:\+[a-z][a-z0-9]*)*)?")


@dataclass(frozen=True, slots=True)
class _Protocol:
    name: str
    pattern: _Pattern
    hash: _Hash
    psk: bool


def _parse(protocol_name: str) -> _Protocol:
    parts = protocol_name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise LocalProtocolError(
            f"not a Noise protocol name (Noise_PATTERN_DH_CIPHER_HASH): {protocol_name!r}"
        )
    _, pattern_part, dh, cipher, hash_name = parts
    match = _PATTERN_RE.fullmatch(pattern_part)
    base = match.group(1) if match else pattern_part
    if match is None or base not in _PATTERNS:
        raise LocalProtocolError(f"unsupported Noise handshake pattern {pattern_part!r}")
    pattern = _PATTERNS[base]
    modifiers = match.group(2).split("+") if match.group(2) else []
    if len(modifiers) > 1:
        raise LocalProtocolError(f"unsupported Noise pattern modifiers {match.group(2)!r}")
    psk = bool(modifiers)
    if modifiers:
        psk_match = re.fullmatch(r"psk(\d+)", modifiers[0])
        position = int(psk_match.group(1)) if psk_match else -1
        if not 0 <= position <= len(pattern.messages):
            raise LocalProtocolError(f"unsupported Noise pattern modifier {modifiers[0]!r}")
        # psk0 goes at the start of the first message, pskN at the end of message N.
        messages = list(pattern.messages)
        if position == 0:
            messages[0] = ("psk", *messages[0])
        else:
            messages[position - 1] = (*messages[position - 1], "psk")
        pattern = _Pattern(pattern.initiator_s_known, pattern.responder_s_known, tuple(messages))
    if dh != "25519":
        raise LocalProtocolError(f"unsupported Noise DH function {dh!r} (only 25519)")
    if cipher != "ChaChaPoly":
        raise LocalProtocolError(f"unsupported Noise cipher {cipher!r} (only ChaChaPoly)")
    if hash_name not in _HASHES:
        raise LocalProtocolError(
            f"unsupported Noise hash {hash_name!r} (supported: {', '.join(_HASHES)})"
        )
    return _Protocol(protocol_name, pattern, _HASHES[hash_name], psk)


def supports(protocol_name: str) -> bool:
    """Whether ``HandshakeState`` can run ``protocol_name``."""
    try:
        _parse(protocol_name)
    except LocalProtocolError:
        return False
    return True


# --- HandshakeState ---------------------------------------------------------------------


class HandshakePhase(Enum):
    WRITE = "write"  # our turn: the next call must be write_message
    READ = "read"  # the peer's turn: the next call must be read_message
    COMPLETE = "complete"  # all messages done: call split()
    SPLIT = "split"  # split() was called; only handshake_hash remains meaningful
    FAILED = "failed"  # a message failed half-way; the handshake is aborted


# The one call each phase accepts, and why any other call is refused. A refused call
# raises LocalProtocolError and changes nothing.
_ALLOWED: dict[HandshakePhase, tuple[str | None, str]] = {
    HandshakePhase.WRITE: ("write_message", "it is our turn to write"),
    HandshakePhase.READ: ("read_message", "it is the peer's turn to write"),
    HandshakePhase.COMPLETE: ("split", "the handshake is complete; call split()"),
    HandshakePhase.SPLIT: (None, "the handshake was already split"),
    HandshakePhase.FAILED: (None, "the handshake failed and was aborted; start a new one"),
}


class HandshakeState:
    """One side of a Noise handshake, driven by ``write_message`` and ``read_message``."""

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        psk: bytes | None = None,
        rng: Rng = nacl.utils.random,
    ) -> None:
        """Set up a handshake.

        ``s`` is our static private key, ``rs`` the peer's static public key when the
        pattern pre-shares it (IK, NK, XK...), ``e`` a fixed ephemeral private key (test
        vectors only), ``psk`` the 32-byte pre-shared key of a ``pskN`` pattern.
        """
        protocol = _parse(protocol_name)
        pattern = protocol.pattern
        self._protocol = protocol
        self._initiator = initiator
        self._rng = rng
        self._s = None if s is None else _check_len(s, DH_LEN, "static private key")
        self._s_pub = None if self._s is None else x25519_public(self._s)
        self._e = None if e is None else _check_len(e, DH_LEN, "ephemeral private key")
        self._e_pub: bytes | None = None
        self._rs = None if rs is None else _check_len(rs, DH_LEN, "remote static key")
        self._re: bytes | None = None
        self._psk = None if psk is None else _check_len(psk, KEY_LEN, "psk")

        my_pre, their_pre = (
            (pattern.initiator_s_known, pattern.responder_s_known)
            if initiator
            else (pattern.responder_s_known, pattern.initiator_s_known)
        )
        mine = pattern.messages[0 if initiator else 1 :: 2]
        if self._s is None and (my_pre or any("s" in m for m in mine)):
            raise LocalProtocolError(f"{protocol_name} needs our static key s")
        if self._rs is None and their_pre:
            raise LocalProtocolError(f"{protocol_name} needs the peer's static key rs")
        if self._rs is not None and not their_pre:
            raise LocalProtocolError(
                f"{protocol_name} does not pre-share the peer's static key: pass no rs and "
                "check remote_static after the handshake"
            )
        if protocol.psk != (self._psk is not None):
            raise LocalProtocolError(
                f"{protocol_name} needs a psk" if protocol.psk else f"{protocol_name} takes no psk"
            )

        self._sym = _SymmetricState(protocol.hash, protocol_name.encode("ascii"))
        self._sym.mix_hash(bytes(prologue))
        # Pre-messages: the initiator's pre-known static key is hashed first, then the responder's.
        i_pub, r_pub = (self._s_pub, self._rs) if initiator else (self._rs, self._s_pub)
        for known, pre_key in (
            (pattern.initiator_s_known, i_pub),
            (pattern.responder_s_known, r_pub),
        ):
            if known and pre_key is not None:  # presence was checked above
                self._sym.mix_hash(pre_key)
        self._index = 0
        self._phase = HandshakePhase.WRITE if initiator else HandshakePhase.READ

    # -- state ---------------------------------------------------------------------------

    @property
    def protocol_name(self) -> str:
        return self._protocol.name

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def phase(self) -> HandshakePhase:
        return self._phase

    @property
    def is_my_turn(self) -> bool:
        """True when the next call must be ``write_message``."""
        return self._phase is HandshakePhase.WRITE

    @property
    def complete(self) -> bool:
        return self._phase in (HandshakePhase.COMPLETE, HandshakePhase.SPLIT)

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h``: final once complete, a channel-binding value."""
        return self._sym.h

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, pre-known or authenticated by a read message."""
        return self._rs

    @property
    def local_static_public(self) -> bytes | None:
        return self._s_pub

    def _require(self, call: str) -> None:
        allowed, why_not = _ALLOWED[self._phase]
        if call != allowed:
            raise LocalProtocolError(f"{call}() not allowed: {why_not}")

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self._protocol.pattern.messages):
            self._phase = HandshakePhase.COMPLETE
        else:
            writer_is_initiator = self._index % 2 == 0
            mine = writer_is_initiator == self._initiator
            self._phase = HandshakePhase.WRITE if mine else HandshakePhase.READ

    # -- the DH tokens -------------------------------------------------------------------

    def _dh_token(self, token: str) -> bytes:
        # es = DH(initiator's e, responder's s); se = DH(initiator's s, responder's e).
        local, remote = {
            "ee": ("e", "e"),
            "ss": ("s", "s"),
            "es": ("e", "s") if self._initiator else ("s", "e"),
            "se": ("s", "e") if self._initiator else ("e", "s"),
        }[token]
        private = self._e if local == "e" else self._s
        public = self._re if remote == "e" else self._rs
        if private is None or public is None:  # pattern tables guarantee this never happens
            raise LocalProtocolError(f"token {token!r} reached without both keys")
        return _dh(private, public)

    # -- messages ------------------------------------------------------------------------

    def _written_length(self, tokens: _Tokens, payload_len: int) -> int:
        has_key = self._sym.cipher.has_key()
        length = 0
        for token in tokens:
            if token == "e":
                length += DH_LEN
                has_key = has_key or self._protocol.psk
            elif token == "s":
                length += DH_LEN + (TAG_LEN if has_key else 0)
            else:  # a DH or psk token: MixKey sets a key
                has_key = True
        return length + payload_len + (TAG_LEN if has_key else 0)

    def write_message(self, payload: bytes = b"") -> bytes:
        """Produce our next handshake message carrying ``payload``."""
        self._require("write_message")
        tokens = self._protocol.pattern.messages[self._index]
        length = self._written_length(tokens, len(payload))
        if length > MAX_MESSAGE_LEN:
            raise LocalProtocolError(f"handshake message would be {length} bytes (max 65535)")
        ephemeral = self._e
        if "e" in tokens and ephemeral is None:
            ephemeral = _check_len(self._rng(DH_LEN), DH_LEN, "rng output")
        # From here on the transcript changes: any failure aborts the handshake.
        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    assert ephemeral is not None
                    self._e, self._e_pub = ephemeral, x25519_public(ephemeral)
                    out += self._e_pub
                    self._sym.mix_hash(self._e_pub)
                    if self._protocol.psk:
                        self._sym.mix_key(self._e_pub)
                elif token == "s":
                    assert self._s_pub is not None
                    out += self._sym.encrypt_and_hash(self._s_pub)
                elif token == "psk":
                    assert self._psk is not None
                    self._sym.mix_key_and_hash(self._psk)
                else:
                    self._sym.mix_key(self._dh_token(token))
            out += self._sym.encrypt_and_hash(bytes(payload))
        except BaseException:
            self._phase = HandshakePhase.FAILED
            raise
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message and return its payload."""
        self._require("read_message")
        tokens = self._protocol.pattern.messages[self._index]
        message = bytes(message)
        known_rs = self._rs
        try:
            if len(message) > MAX_MESSAGE_LEN:
                raise HandshakeError(f"peer sent a {len(message)}-byte handshake message")
            pos = 0

            def take(n: int, what: str) -> bytes:
                nonlocal pos
                if len(message) - pos < n:
                    raise HandshakeError(
                        f"handshake message too short: {len(message)} bytes ends inside {what}"
                    )
                chunk = message[pos : pos + n]
                pos += n
                return chunk

            for token in tokens:
                if token == "e":
                    self._re = take(DH_LEN, "the ephemeral key")
                    self._sym.mix_hash(self._re)
                    if self._protocol.psk:
                        self._sym.mix_key(self._re)
                elif token == "s":
                    size = DH_LEN + (TAG_LEN if self._sym.cipher.has_key() else 0)
                    self._rs = self._sym.decrypt_and_hash(take(size, "the static key"))
                elif token == "psk":
                    assert self._psk is not None
                    self._sym.mix_key_and_hash(self._psk)
                else:
                    self._sym.mix_key(self._dh_token(token))
            payload = self._sym.decrypt_and_hash(message[pos:])
        except BaseException:
            # Never expose a static key from a message that did not authenticate.
            self._rs = known_rs
            self._phase = HandshakePhase.FAILED
            raise
        self._advance()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """The transport ciphers ``(initiator->responder, responder->initiator)``.

        Allowed once: a second pair would reuse the same keys and nonces.
        """
        self._require("split")
        self._phase = HandshakePhase.SPLIT
        return self._sym.split()
