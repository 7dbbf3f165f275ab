"""Write the Kith known-answer vectors from docs/protocol.md, independently of node/.

Run from the repository root::

    python tests/vectors/kith/make_vectors.py            # rewrite the JSON files here
    python tests/vectors/kith/make_vectors.py OUT_DIR    # write them elsewhere

This is a second implementation of what the document states, written from the
document: it uses hashlib, base64, struct and PyNaCl (Ed25519, XChaCha20-Poly1305)
directly, and its own msgpack encoder (the few formats Kith uses, shortest forms).
It must never import ``node``: the vectors would then only repeat the code, and a
silent format change would pass. ``tests/test_known_answers.py`` checks node/
against the files and that this script still writes exactly them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path
from typing import Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_box,
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.signing import SigningKey

HERE = Path(__file__).resolve().parent

# RFC 8032, section 7.1, TEST 1: anyone can check the public key and signatures.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


# -- msgpack, as docs/protocol.md uses it: shortest forms, bin for bytes, UTF-8 str --

def mp(obj: Any) -> bytes:
    if obj is False:
        return b"\xc2"
    if obj is True:
        return b"\xc3"
    if isinstance(obj, int):
        if not 0 <= obj < 2**64:
            raise ValueError("Kith encodes only unsigned integers")
        if obj < 0x80:
            return bytes([obj])
        for limit, head, fmt in ((2**8, 0xCC, ">B"), (2**16, 0xCD, ">H"), (2**32, 0xCE, ">I")):
            if obj < limit:
                return bytes([head]) + struct.pack(fmt, obj)
        return b"\xcf" + struct.pack(">Q", obj)
    if isinstance(obj, bytes):
        return _head(len(obj), None, 0xC4, 0xC5, 0xC6) + obj
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        if len(raw) < 32:
            return bytes([0xA0 | len(raw)]) + raw
        return _head(len(raw), None, 0xD9, 0xDA, 0xDB) + raw
    if isinstance(obj, list):
        return _head(len(obj), 0x90, None, 0xDC, 0xDD) + b"".join(mp(x) for x in obj)
    if isinstance(obj, dict):
        return _head(len(obj), 0x80, None, 0xDE, 0xDF) + b"".join(
            mp(k) + mp(v) for k, v in obj.items()
        )
    raise TypeError(type(obj))


def _head(n: int, fix: int | None, h8: int | None, h16: int, h32: int) -> bytes:
    if fix is not None and n < 16:
        return bytes([fix | n])
    if h8 is not None and n < 2**8:
        return bytes([h8, n])
    if n < 2**16:
        return bytes([h16]) + struct.pack(">H", n)
    return bytes([h32]) + struct.pack(">I", n)


# -- section 1: peer ids --

def peer_id_vector(public: bytes) -> dict[str, str]:
    checksum = hashlib.blake2b(public, digest_size=3, person=b"kith-peer-id").digest()
    text = base64.b32encode(public + checksum).decode().lower()
    assert len(text) == 56 and "=" not in text
    digest = hashlib.blake2b(public, digest_size=30, person=b"kith-fingerprnt").digest()
    groups = [int.from_bytes(digest[i:i + 5], "big") % 100_000 for i in range(0, 30, 5)]
    return {"public_key": public.hex(), "checksum": checksum.hex(), "text": text,
            "short_id": text[:8], "fingerprint": " ".join(f"{g:05d}" for g in groups)}


def typo(text: str, index: int) -> str:
    """``text`` with character ``index`` replaced by another base32 letter."""
    return text[:index] + ("b" if text[index] == "a" else "a") + text[index + 1:]


def peer_ids() -> dict[str, Any]:
    keys = [RFC8032_PUBLIC, bytes(32), bytes(range(32)), b"\xff" * 32]
    vectors = [peer_id_vector(k) for k in keys]
    text = vectors[0]["text"]
    messy = "-".join(text[i:i + 4] for i in range(0, 56, 4)).upper()
    return {
        "vectors": vectors,
        # Inputs a parser accepts for vectors[0] (case, spaces, dashes, 0/1/8 for o/l/b).
        "accepted": [
            messy,
            "  " + " ".join(text[i:i + 8] for i in range(0, 56, 8)) + "\n",
            text.replace("o", "0").replace("l", "1").replace("b", "8"),
        ],
        # Inputs a parser refuses, with the reason: a typo fails the checksum.
        "refused": [
            {"text": typo(text, 0), "reason": "checksum"},
            {"text": typo(text, 30), "reason": "checksum"},
            {"text": typo(text, 55), "reason": "checksum"},
            {"text": text[:55], "reason": "length"},
            {"text": text + "a", "reason": "length"},
            {"text": "9" + text[1:], "reason": "alphabet"},
        ],
    }


# -- section 12: group id --

def group_id(creator: bytes, nonce: bytes) -> bytes:
    return hashlib.blake2b(creator + nonce, digest_size=32, person=b"kith-group-id").digest()


def group_ids() -> dict[str, Any]:
    cases = [(RFC8032_PUBLIC, bytes(range(16))), (bytes(32), bytes(16)),
             (b"\xff" * 32, b"\xff" * 16)]
    return {"vectors": [{"creator": c.hex(), "nonce": n.hex(), "group_id": group_id(c, n).hex()}
                        for c, n in cases]}


# -- section 11: events --

def event_vector(name: str, group: bytes, seed: bytes, seq: int, epoch: int,
                 clock: list[tuple[bytes, int]], lamport: int, kind: int,
                 body: bytes, author: bytes | None = None) -> dict[str, Any]:
    """``seed`` signs; the author is its public key unless given (a private MESSAGE is
    signed by the author's sender key for the epoch)."""
    key = SigningKey(seed)
    author = bytes(key.verify_key) if author is None else author
    fields = [group, author, seq, epoch, [[a, s] for a, s in clock], lamport, kind, body]
    signing = b"kith-event/1" + mp(fields)
    signature = key.sign(signing).signature
    encoded = mp([1, *fields, signature])
    return {
        "name": name, "seed": seed.hex(), "group": group.hex(), "author": author.hex(),
        "seq": seq, "epoch": epoch, "clock": [[a.hex(), s] for a, s in clock],
        "lamport": lamport, "kind": kind, "body": body.hex(),
        "signing_bytes": signing.hex(), "signature": signature.hex(),
        "encoded": encoded.hex(),
        "event_id": hashlib.blake2b(encoded, digest_size=32).digest().hex(),
    }


def events() -> dict[str, Any]:
    group = group_id(RFC8032_PUBLIC, bytes(range(16)))
    other = b"\x02" * 32
    third = b"\x03" * 32
    return {"vectors": [
        # The worked example of docs/protocol.md: a RENAME by the RFC 8032 key.
        event_vector("rename", group, RFC8032_SEED, seq=2, epoch=0, clock=[(other, 1)],
                     lamport=2, kind=6, body=mp({"name": "Book club"})),
        # Every integer width (fixint, uint 8, 16, 32, 64) and bin 16.
        event_vector("widths", group, RFC8032_SEED, seq=300, epoch=70_000,
                     clock=[(other, 200), (third, 5)], lamport=2**33, kind=10,
                     body=bytes(i % 256 for i in range(300))),
        # A first event: empty clock, epoch 0, seq 1, lamport 1.
        event_vector("first", group, bytes(32), seq=1, epoch=0, clock=[], lamport=1,
                     kind=4, body=mp({})),
    ]}


# -- section 13: a committed SENDER_KEY and one recipient's sealed copy --

def sealed_box(message: bytes, recipient: bytes, ephemeral_secret: bytes) -> bytes:
    """libsodium's crypto_box_seal with a chosen ephemeral key (libsodium draws it at
    random): ``epk || crypto_box(message, BLAKE2b(epk || pk, 24 bytes), pk, esk)``."""
    epk = crypto_scalarmult_base(ephemeral_secret)
    nonce = hashlib.blake2b(epk + recipient, digest_size=24).digest()
    return epk + crypto_box(message, nonce, recipient, ephemeral_secret)


def sender_key_vector(name: str, recipient_seed: bytes, chain_key: bytes, index: int,
                      salt: bytes, ephemeral: bytes, signing_seed: bytes, epoch: int
                      ) -> dict[str, Any]:
    key = SigningKey(recipient_seed)
    peer = bytes(key.verify_key)
    x_public = crypto_sign_ed25519_pk_to_curve25519(peer)
    x_secret = crypto_sign_ed25519_sk_to_curve25519(recipient_seed + peer)
    payload = b"\x01" + chain_key + struct.pack(">Q", index)
    commit = hashlib.blake2b(payload, digest_size=32, key=salt,
                             person=b"kith-senderkey").digest()
    sign = bytes(SigningKey(signing_seed).verify_key)
    body = mp({"epoch": epoch, "sign": sign, "salt": salt, "commit": commit})
    sealed = sealed_box(payload, x_public, ephemeral)
    assert len(payload) == 41 and len(sealed) == 89
    return {"name": name, "recipient_seed": recipient_seed.hex(), "recipient": peer.hex(),
            "recipient_x25519_public": x_public.hex(), "recipient_x25519_secret": x_secret.hex(),
            "chain_key": chain_key.hex(), "index": index, "payload": payload.hex(),
            "salt": salt.hex(), "commit": commit.hex(), "epoch": epoch,
            "signing_seed": signing_seed.hex(), "sign": sign.hex(), "body": body.hex(),
            "ephemeral_secret": ephemeral.hex(), "sealed": sealed.hex()}


def sender_keys() -> dict[str, Any]:
    group = group_id(RFC8032_PUBLIC, bytes(range(16)))
    first = sender_key_vector("first", bytes(range(32)), bytes(range(0x20, 0x40)), 0,
                              bytes(range(0x80, 0x90)), bytes([0x55]) * 32, b"\x07" * 32, 0)
    later = sender_key_vector("later", b"\x11" * 32, b"\xee" * 32, 300, b"\x00" * 16,
                              bytes(range(0xA0, 0xC0)), b"\x08" * 32, 70_000)
    message = message_vector(group, RFC8032_PUBLIC, bytes.fromhex(first["chain_key"]), 0, 0,
                             "hello")
    message_event = event_vector("message", group, b"\x07" * 32, seq=4, epoch=0, clock=[],
                                 lamport=4, kind=10, body=bytes.fromhex(message["body"]),
                                 author=RFC8032_PUBLIC)
    return {
        "vectors": [first, later],
        # The first one as a whole event: RFC 8032 TEST 1's SENDER_KEY (kind 9), seq 3,
        # epoch 0, after seeing event 1 of the peer 0202...02.
        "event": event_vector("sender key", group, RFC8032_SEED, seq=3, epoch=0,
                              clock=[(b"\x02" * 32, 1)], lamport=3, kind=9,
                              body=bytes.fromhex(first["body"])),
        # Its first message (index 0, the nonce-free form), as an event signed by the
        # epoch's signing key (seed 0707...07), and as it travels (section 14, evc).
        "message": message,
        "message_event": message_event,
        "events_message": events_message(group, bytes.fromhex(message_event["encoded"])),
    }


def message_vector(group: bytes, author: bytes, chain_key: bytes, index: int, epoch: int,
                   text: str) -> dict[str, Any]:
    """A MESSAGE body: ``[i, XChaCha20-Poly1305(mk_i, 24 zero bytes, ad, plaintext)]``."""
    mk = hmac.new(chain_key, b"\x01", hashlib.sha256).digest()
    next_ck = hmac.new(chain_key, b"\x02", hashlib.sha256).digest()
    ad = mp([group, author, epoch, index])
    plaintext = mp({"text": text})
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, bytes(24), mk)
    return {"chain_key": chain_key.hex(), "index": index, "epoch": epoch,
            "message_key": mk.hex(), "next_chain_key": next_ck.hex(), "ad": ad.hex(),
            "plaintext": plaintext.hex(), "ciphertext": ciphertext.hex(),
            "body": mp([index, ciphertext]).hex()}


def events_message(group: bytes, encoded: bytes) -> dict[str, Any]:
    """``{"t": "events", "g": group, "evc": [compact]}``: the event without its group."""
    assert encoded[:4] == b"\x9a\x01\xc4\x20" and encoded[4:36] == group
    compact = b"\x99\x01" + encoded[36:]
    return {"compact": compact.hex(),
            "encoded": mp({"t": "events", "g": group, "evc": [compact]}).hex()}


# -- section 16: attachment chunks --

CHUNK_SIZE = 256 * 1024


def file_vector(name: str, key: bytes, plaintext: bytes, *, patterned: bool) -> dict[str, Any]:
    """One file; if ``patterned`` the plaintext is left out (it is ``mod251(size)``) and so
    is every chunk longer than 64 bytes (its address pins it byte for byte)."""
    size = len(plaintext)
    n = -(-size // CHUNK_SIZE)
    aad = b"kith-file/1" + struct.pack(">QQ", n, size)
    chunks = []
    for i in range(n):
        piece = plaintext[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]
        nonce = i.to_bytes(24, "big")
        chunk = crypto_aead_xchacha20poly1305_ietf_encrypt(piece, aad, nonce, key)
        entry = {"index": i, "nonce": nonce.hex(), "length": len(chunk),
                 "address": hashlib.blake2b(chunk, digest_size=32,
                                            person=b"kith-chunk").digest().hex()}
        if not patterned or len(chunk) <= 64:
            entry["chunk"] = chunk.hex()
        chunks.append(entry)
    text = {"pattern": "j mod 251"} if patterned else {"plaintext": plaintext.hex()}
    return {"name": name, "key": key.hex(), "size": size, **text, "n": n, "aad": aad.hex(),
            "chunks": chunks}


def mod251(size: int) -> bytes:
    """Plaintext byte j is j mod 251 (so a large file needs no space in the vector)."""
    return bytes(j % 251 for j in range(size))


def chunks() -> dict[str, Any]:
    key = bytes(range(0x40, 0x60))
    return {"vectors": [
        file_vector("hello", key, b"hello, kith", patterned=False),
        file_vector("empty", key, b"", patterned=False),
        # Two chunks: 256 KiB and 5 bytes.
        file_vector("two chunks", key, mod251(CHUNK_SIZE + 5), patterned=True),
    ]}


FILES = {"peer_id.json": peer_ids, "group_id.json": group_ids, "event.json": events,
         "chunk.json": chunks, "sender_key.json": sender_keys}


def render(make: Any) -> str:
    return json.dumps(make(), indent=1) + "\n"


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        (out / name).write_text(render(make))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
