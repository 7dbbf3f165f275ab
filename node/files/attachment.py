"""An attachment: a file encrypted with a fresh key, cut into content-addressed chunks (pure).

Theory of operation
-------------------
A file of ``size`` bytes is cut into ``n = ceil(size / CHUNK_SIZE)`` plaintext
pieces of ``CHUNK_SIZE`` bytes (the last one shorter; a 0-byte file has no
chunks at all). The sender draws a fresh 32-byte key ``k`` for the file (the
caller injects the randomness) and encrypts piece ``i`` on its own::

    nonce_i = i as a 24-byte big-endian integer      (unique per chunk under one key)
    aad     = "kith-file/1" || u64 n || u64 size     (big-endian)
    chunk_i = XChaCha20-Poly1305-IETF(k, nonce_i, aad, piece_i)   (piece + 16-byte tag)

The nonce is derived from the index, not random: ``k`` is used for this file
only, so each (key, nonce) pair occurs exactly once. The **content address** of
a chunk is ``BLAKE2b-256(chunk_i, person="kith-chunk")``: a hash of the
*ciphertext*, so any node (a relay, a member still fetching) can verify a chunk
without the key. The ``FileRef`` lists every chunk's address in order; it
travels inside the encrypted, signed MESSAGE (node.group.content), so the
addresses are as authentic as the message itself: a chunk that hashes right is
the chunk the author made, in its place. Decryption then only fails if the
author itself made bad chunks, and says so.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from node.errors import DecryptError, RemoteProtocolError

#: Plaintext bytes per chunk (the last chunk of a file is shorter).
CHUNK_SIZE = 256 * 1024
TAG_LEN = 16
#: Largest chunk on the wire (a full piece plus the AEAD tag).
MAX_CHUNK = CHUNK_SIZE + TAG_LEN
#: Most chunks one file may have: its addresses must fit in one MESSAGE.
MAX_CHUNKS = 1024
#: The hard cap on a file (256 MiB); a node's configured cap is at most this.
HARD_MAX_FILE = CHUNK_SIZE * MAX_CHUNKS
KEY_LEN = 32
HASH_LEN = 32
NONCE_LEN = 24
MAX_NAME = 255  # characters of a file name as sent
MAX_MEDIA_TYPE = 127

_AAD = struct.Struct(">QQ")


class AttachmentError(RemoteProtocolError):
    """A file reference or chunk that breaks the rules (bad map, wrong hash, wrong size)."""


def chunk_hash(chunk: bytes) -> bytes:
    """The content address of an (encrypted) chunk."""
    return hashlib.blake2b(chunk, digest_size=HASH_LEN, person=b"kith-chunk").digest()


def chunk_count(size: int) -> int:
    return -(-size // CHUNK_SIZE)


def piece_size(size: int, index: int) -> int:
    """Plaintext length of chunk ``index`` of a ``size``-byte file."""
    count = chunk_count(size)
    if not 0 <= index < count:
        raise IndexError(index)
    return CHUNK_SIZE if index < count - 1 else size - CHUNK_SIZE * (count - 1)


def _nonce(index: int) -> bytes:
    return index.to_bytes(NONCE_LEN, "big")


def _aad(size: int) -> bytes:
    return b"kith-file/1" + _AAD.pack(chunk_count(size), size)


def encrypt_chunk(key: bytes, size: int, index: int, piece: bytes) -> bytes:
    """Encrypt piece ``index`` of a ``size``-byte file (``piece`` must have the right length)."""
    if len(key) != KEY_LEN:
        raise ValueError("a file key is 32 bytes")
    if len(piece) != piece_size(size, index):
        raise ValueError(f"chunk {index} of a {size}-byte file is {piece_size(size, index)} "
                         f"bytes, not {len(piece)}")
    return bytes(crypto_aead_xchacha20poly1305_ietf_encrypt(piece, _aad(size), _nonce(index),
                                                            key))


def decrypt_chunk(key: bytes, size: int, index: int, chunk: bytes) -> bytes:
    """The plaintext of chunk ``index``; ``DecryptError`` if it is not what the key sealed."""
    expected = piece_size(size, index) + TAG_LEN
    if len(chunk) != expected:
        raise DecryptError(f"chunk {index} is {len(chunk)} bytes, expected {expected}")
    try:
        return bytes(crypto_aead_xchacha20poly1305_ietf_decrypt(chunk, _aad(size),
                                                                _nonce(index), key))
    except CryptoError as exc:
        raise DecryptError(f"chunk {index} does not decrypt: the attachment is corrupt") from exc


@dataclass(frozen=True, slots=True)
class FileRef:
    """What a message says about its attachment (inside the encryption)."""

    name: str
    size: int
    key: bytes
    chunks: tuple[bytes, ...]  # content addresses, in file order
    media_type: str = ""

    def encode(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "type": self.media_type,
                "key": self.key, "chunks": b"".join(self.chunks)}

    def index_of(self, address: bytes) -> list[int]:
        return [i for i, h in enumerate(self.chunks) if h == address]


def decode_ref(obj: object) -> FileRef:
    """Strictly decode the ``file`` map of a message content; ``AttachmentError`` if bad."""
    if not isinstance(obj, dict) or set(obj) != {"name", "size", "type", "key", "chunks"}:
        raise AttachmentError("'file' must be a map with name, size, type, key and chunks")
    name, size, media, key, chunks = (obj[k] for k in ("name", "size", "type", "key", "chunks"))
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise AttachmentError(f"a file name is 1..{MAX_NAME} characters")
    if (not isinstance(size, int) or isinstance(size, bool)
            or not 0 <= size <= HARD_MAX_FILE):
        raise AttachmentError(f"a file size is 0..{HARD_MAX_FILE} bytes")
    if not isinstance(media, str) or len(media) > MAX_MEDIA_TYPE or not media.isprintable():
        raise AttachmentError(f"a media type is at most {MAX_MEDIA_TYPE} printable characters")
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise AttachmentError(f"a file key is {KEY_LEN} bytes")
    count = chunk_count(size)
    if not isinstance(chunks, bytes) or len(chunks) != count * HASH_LEN:
        raise AttachmentError(f"a {size}-byte file has {count} chunk addresses")
    return FileRef(name, size, key,
                   tuple(chunks[i:i + HASH_LEN] for i in range(0, len(chunks), HASH_LEN)),
                   media)


class Chunker:
    """Encrypt a file piece by piece: ``add(piece)`` for each ``piece_size`` piece in order.

    Keeps nothing but the addresses, so a 100 MiB file never sits in memory whole.
    """

    def __init__(self, key: bytes, size: int) -> None:
        if not 0 <= size <= HARD_MAX_FILE:
            raise ValueError(f"a file is at most {HARD_MAX_FILE} bytes")
        self.key = key
        self.size = size
        self.count = chunk_count(size)
        self.addresses: list[bytes] = []

    def next_piece_size(self) -> int | None:
        """How many plaintext bytes the next ``add`` takes (None: all done)."""
        index = len(self.addresses)
        return None if index >= self.count else piece_size(self.size, index)

    def add(self, piece: bytes) -> tuple[bytes, bytes]:
        """(address, encrypted chunk) of the next piece."""
        chunk = encrypt_chunk(self.key, self.size, len(self.addresses), piece)
        address = chunk_hash(chunk)
        self.addresses.append(address)
        return address, chunk

    def ref(self, name: str, media_type: str = "") -> FileRef:
        if len(self.addresses) != self.count:
            raise ValueError(f"{len(self.addresses)} of {self.count} chunks encrypted")
        return FileRef(name, self.size, self.key, tuple(self.addresses), media_type)


def encrypt_bytes(key: bytes, data: bytes, name: str = "file") -> tuple[FileRef, list[bytes]]:
    """Encrypt a whole file held in memory (tests, small files): the ref and its chunks."""
    chunker = Chunker(key, len(data))
    chunks = []
    offset = 0
    while (n := chunker.next_piece_size()) is not None:
        chunks.append(chunker.add(data[offset:offset + n])[1])
        offset += n
    return chunker.ref(name), chunks


def decrypt_chunks(ref: FileRef, chunks: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
    """The plaintext pieces of ``ref`` from its chunks, each checked against its address."""
    seen = 0
    for index, chunk in enumerate(chunks):
        if index >= len(ref.chunks):
            raise AttachmentError(f"more than {len(ref.chunks)} chunks")
        if chunk_hash(chunk) != ref.chunks[index]:
            raise AttachmentError(f"chunk {index} does not hash to its address")
        seen = index + 1
        yield decrypt_chunk(ref.key, ref.size, index, chunk)
    if seen != len(ref.chunks):
        raise AttachmentError(f"{seen} of {len(ref.chunks)} chunks")
