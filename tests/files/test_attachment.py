"""The attachment core: chunk sizes, encryption, addresses, the file reference, tampering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import DecryptError
from node.files.attachment import (
    CHUNK_SIZE,
    HARD_MAX_FILE,
    HASH_LEN,
    MAX_CHUNK,
    AttachmentError,
    Chunker,
    FileRef,
    chunk_count,
    chunk_hash,
    decode_ref,
    decrypt_chunk,
    decrypt_chunks,
    encrypt_bytes,
    encrypt_chunk,
)
from node.group.content import Post, decode_content, encode_content

KEY = bytes(range(32))
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17]


def data_of(size: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_at_every_boundary(size: int) -> None:
    data = data_of(size)
    ref, chunks = encrypt_bytes(KEY, data, "f.bin")
    assert len(chunks) == len(ref.chunks) == chunk_count(size)
    assert all(len(c) <= MAX_CHUNK for c in chunks)
    assert [chunk_hash(c) for c in chunks] == list(ref.chunks)
    assert b"".join(decrypt_chunks(ref, chunks)) == data


def test_chunk_counts() -> None:
    assert [chunk_count(s) for s in SIZES] == [0, 1, 1, 1, 2, 4]
    assert chunk_count(HARD_MAX_FILE) == 1024


def test_a_fresh_key_gives_unrelated_chunks() -> None:
    data = data_of(1000)
    a, _ = encrypt_bytes(KEY, data)
    b, _ = encrypt_bytes(bytes(32), data)
    assert a.chunks != b.chunks


def test_a_tampered_chunk_fails_its_address_and_its_tag() -> None:
    data = data_of(CHUNK_SIZE + 5)
    ref, chunks = encrypt_bytes(KEY, data)
    bad = bytearray(chunks[1])
    bad[3] ^= 1
    with pytest.raises(AttachmentError, match="chunk 1 does not hash"):
        list(decrypt_chunks(ref, [chunks[0], bytes(bad)]))
    with pytest.raises(DecryptError, match="does not decrypt"):
        decrypt_chunk(KEY, ref.size, 1, bytes(bad))


def test_swapped_truncated_or_missing_chunks_are_refused() -> None:
    ref, chunks = encrypt_bytes(KEY, data_of(2 * CHUNK_SIZE))
    with pytest.raises(AttachmentError, match="chunk 0"):
        list(decrypt_chunks(ref, [chunks[1], chunks[0]]))
    with pytest.raises(AttachmentError, match="1 of 2"):
        list(decrypt_chunks(ref, chunks[:1]))
    with pytest.raises(DecryptError, match="expected"):
        decrypt_chunk(KEY, ref.size, 0, chunks[0][:-1])
    # A chunk moved to another index hashes right for nobody and decrypts under no nonce.
    with pytest.raises(DecryptError):
        decrypt_chunk(KEY, ref.size, 1, chunks[0])


def test_a_chunk_is_bound_to_the_file_size() -> None:
    _, chunks = encrypt_bytes(KEY, data_of(10))
    with pytest.raises(DecryptError):
        decrypt_chunk(KEY, 11, 0, chunks[0] + b"\0")


def test_encrypt_refuses_a_piece_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="not 3"):
        encrypt_chunk(KEY, CHUNK_SIZE + 1, 1, b"abc")
    chunker = Chunker(KEY, 5)
    with pytest.raises(ValueError, match="0 of 1"):
        chunker.ref("x")


def test_ref_round_trips_through_message_content() -> None:
    ref, _ = encrypt_bytes(KEY, data_of(CHUNK_SIZE * 2 + 1), "photo.jpg")
    post = Post("look", file=FileRef(ref.name, ref.size, ref.key, ref.chunks, "image/jpeg"))
    assert decode_content(encode_content(post)) == post


def test_the_largest_file_ref_fits_in_one_message() -> None:
    ref = FileRef("n" * 255, HARD_MAX_FILE, KEY, tuple(bytes(32) for _ in range(1024)), "t" * 127)
    raw = encode_content(Post("caption", file=ref))
    assert len(raw) < 40_000  # well under a private MESSAGE's 64 KiB ciphertext
    assert decode_content(raw) == Post("caption", file=ref)


@pytest.mark.parametrize("change, why", [
    ({"size": -1}, "size"),
    ({"size": HARD_MAX_FILE + 1}, "size"),
    ({"size": True}, "size"),
    ({"name": ""}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"key": b"short"}, "key"),
    ({"type": "a\nb"}, "media type"),
    ({"chunks": b"\0" * (HASH_LEN + 1)}, "addresses"),
    ({"size": CHUNK_SIZE + 1}, "2 chunk addresses"),
    ({"extra": 1}, "map"),
])
def test_bad_refs_are_refused(change: dict[str, object], why: str) -> None:
    good = {"name": "a", "size": 1, "type": "", "key": KEY, "chunks": bytes(32)}
    assert decode_ref(good).size == 1
    with pytest.raises(AttachmentError, match=why):
        decode_ref({**good, **change})


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3 * 1024), st.binary(min_size=32, max_size=32))
def test_any_small_file_round_trips(data: bytes, key: bytes) -> None:
    ref, chunks = encrypt_bytes(key, data)
    assert b"".join(decrypt_chunks(ref, chunks)) == data


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=4 * CHUNK_SIZE), st.data())
def test_any_single_bit_flip_is_detected(size: int, draw: st.DataObject) -> None:
    ref, chunks = encrypt_bytes(KEY, bytes(size))
    if not chunks:
        assert ref.chunks == ()
        return
    index = draw.draw(st.integers(0, len(chunks) - 1))
    bit = draw.draw(st.integers(0, len(chunks[index]) * 8 - 1))
    bad = bytearray(chunks[index])
    bad[bit // 8] ^= 1 << (bit % 8)
    assert chunk_hash(bytes(bad)) != ref.chunks[index]
    with pytest.raises(DecryptError):
        decrypt_chunk(KEY, size, index, bytes(bad))
