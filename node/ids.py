"""Identifiers and their text forms.

``GroupId`` and ``EventId`` are 32-byte BLAKE2b digests (``ID_LEN``): a group id
commits to its creator (``node.group.bodies.group_id_for``), an event id is the
hash of the encoded event (``node.group.events``). They live here, below both
``wire`` and ``group``, so that wire messages can carry them without importing
the group layer. The rest of this module is about peer ids.

A node is identified by its 32-byte Ed25519 public key (``PeerId``). People read
peer ids out loud and type them, so the text form is built for that:

* **peer id** (56 characters): lowercase RFC 4648 base32 of the public key
  followed by a 3-byte checksum (BLAKE2b with a Kith-specific personalisation).
  32 + 3 = 35 bytes = 280 bits = exactly 56 base32 characters, no padding. A
  typo is caught by the checksum (a random error passes with probability
  2^-24). Parsing forgives what people do: upper case, spaces and dashes, and
  the digits 0, 1 and 8 typed for the letters o, l and b (base32 has no 0, 1
  or 8).
* **short id** (8 characters): the first 8 characters of the peer id, for
  display only; never accepted where an identity must be checked.
* **fingerprint**: 30 decimal digits in six groups of five, derived from the key,
  for comparing out of band ("read me your fingerprint"), in the spirit of
  Signal's safety numbers.
"""

from __future__ import annotations

import base64
import hashlib
from typing import NewType

from node.errors import ConfigError

PeerId = NewType("PeerId", bytes)
GroupId = NewType("GroupId", bytes)
EventId = NewType("EventId", bytes)

#: Length of a group id and of an event id.
ID_LEN = 32

PUBLIC_KEY_LEN = 32
CHECKSUM_LEN = 3
PEER_ID_TEXT_LEN = 56
SHORT_ID_LEN = 8

_CHECKSUM_PERSON = b"kith-peer-id"
_FINGERPRINT_PERSON = b"kith-fingerprnt"
_TYPO_MAP = str.maketrans({"0": "o", "1": "l", "8": "b"})


def peer_id(public_key: bytes) -> PeerId:
    """Return ``public_key`` as a PeerId after checking its length."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise ValueError(f"a public key is {PUBLIC_KEY_LEN} bytes, got {len(public_key)}")
    return PeerId(bytes(public_key))


def _checksum(public_key: bytes) -> bytes:
    return hashlib.blake2b(public_key, digest_size=CHECKSUM_LEN, person=_CHECKSUM_PERSON).digest()


def format_peer_id(pid: PeerId) -> str:
    """The 56-character text form of a peer id."""
    raw = bytes(pid) + _checksum(pid)
    return base64.b32encode(raw).decode("ascii").lower()


def short_id(pid: PeerId) -> str:
    """An 8-character prefix of the peer id, for display."""
    return format_peer_id(pid)[:SHORT_ID_LEN]


def parse_peer_id(text: str) -> PeerId:
    """Parse the text form of a peer id; raise ``ConfigError`` saying what is wrong."""
    stripped = "".join(text.split()).replace("-", "")
    cleaned = stripped.lower().translate(_TYPO_MAP)
    if len(cleaned) != PEER_ID_TEXT_LEN:
        raise ConfigError(
            f"a peer id has {PEER_ID_TEXT_LEN} characters, {text!r} has {len(cleaned)}"
        )
    # Checked before lower() and upper() would fold a few non-ASCII letters into ASCII
    # ones (the Kelvin sign into k, a dotless i into I): only a-z, 2-7 are a peer id.
    if not stripped.isascii():
        raise ConfigError(f"{text!r} is not a peer id: only letters a-z and digits 2-7")
    try:
        raw = base64.b32decode(cleaned.upper())
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not a peer id: only letters a-z and digits 2-7") from exc
    key, check = raw[:PUBLIC_KEY_LEN], raw[PUBLIC_KEY_LEN:]
    if _checksum(key) != check:
        raise ConfigError(f"{text!r} is not a valid peer id: checksum mismatch (a typo?)")
    return PeerId(key)


def fingerprint(pid: PeerId) -> str:
    """30 digits in groups of five, for comparing identities out of band."""
    digest = hashlib.blake2b(bytes(pid), digest_size=30, person=_FINGERPRINT_PERSON).digest()
    groups = (
        int.from_bytes(digest[i : i + 5], "big") % 100_000 for i in range(0, 30, 5)
    )
    return " ".join(f"{g:05d}" for g in groups)
