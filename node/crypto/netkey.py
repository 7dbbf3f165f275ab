"""The optional LAN network key (pure).

A network key is 32 random bytes shared out of band by the members of a LAN.
With a key set, the Noise prologue becomes ``b"kith/1" + 0x00 + tag`` where
``tag = BLAKE2b-256(key=network_key, data=b"kith/1 prologue")``. Noise hashes
the prologue into the handshake hash, which is the associated data of every
encrypted handshake payload, so two nodes whose keys differ fail the handshake
at the first encrypted field (message 2): neither learns the other's identity.

The tag is a keyed hash of a 256-bit secret: it reveals nothing about the key
and is never shown. What people compare is the separate ``key_id``, another
keyed hash with a different label, 8 bytes in hex.
"""

from __future__ import annotations

import hashlib

from node.errors import ConfigError

NETWORK_KEY_LEN = 32
BASE_PROLOGUE = b"kith/1"


def prologue(network_key: bytes | None) -> bytes:
    """The Noise prologue for this protocol version and optional network key."""
    if network_key is None:
        return BASE_PROLOGUE
    check_network_key(network_key)
    tag = hashlib.blake2b(b"kith/1 prologue", key=network_key, digest_size=32).digest()
    return BASE_PROLOGUE + b"\x00" + tag


def key_id(network_key: bytes) -> str:
    """A short public name for a network key (16 hex digits), safe to show and compare."""
    check_network_key(network_key)
    return hashlib.blake2b(b"kith/1 key id", key=network_key, digest_size=8).hexdigest()


def check_network_key(network_key: bytes) -> None:
    if len(network_key) != NETWORK_KEY_LEN:
        raise ConfigError(
            f"a network key is {NETWORK_KEY_LEN} bytes, this one is {len(network_key)}"
        )


def parse_network_key_file(content: bytes) -> bytes:
    """Accept 32 raw bytes or 64 hex digits (surrounding whitespace ignored)."""
    text = content.strip()
    if len(text) == 2 * NETWORK_KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(content) == NETWORK_KEY_LEN:
        return content
    raise ConfigError(
        f"a network key file holds {NETWORK_KEY_LEN} raw bytes or {2 * NETWORK_KEY_LEN} hex "
        f"digits; this one holds {len(content)} bytes"
    )
