"""Attachment chunks against known answers written from docs/protocol.md (section 16).

tests/vectors/kith/make_vectors.py encrypts with PyNaCl directly and hashes with
hashlib, sharing no code with node/files.
"""

from __future__ import annotations

import json
from typing import Any

from node.files.attachment import chunk_count, chunk_hash, decrypt_chunks, encrypt_bytes
from tests.vectorfiles import vector_path


def _load() -> list[dict[str, Any]]:
    with vector_path("kith/chunk.json").open(encoding="utf-8") as f:
        vectors: list[dict[str, Any]] = json.load(f)["vectors"]
    return vectors


def _plaintext(v: dict[str, Any]) -> bytes:
    if "plaintext" in v:
        return bytes.fromhex(v["plaintext"])
    assert v["pattern"] == "j mod 251"
    return bytes(j % 251 for j in range(v["size"]))


def test_chunks_and_addresses() -> None:
    vectors = _load()
    assert [v["name"] for v in vectors] == ["hello", "empty", "two chunks"]
    for v in vectors:
        plaintext = _plaintext(v)
        assert len(plaintext) == v["size"]
        assert chunk_count(v["size"]) == v["n"] == len(v["chunks"])
        ref, chunks = encrypt_bytes(bytes.fromhex(v["key"]), plaintext)
        assert [a.hex() for a in ref.chunks] == [c["address"] for c in v["chunks"]]
        for chunk, expected in zip(chunks, v["chunks"], strict=True):
            assert len(chunk) == expected["length"]
            assert chunk_hash(chunk).hex() == expected["address"]
            if "chunk" in expected:
                assert chunk.hex() == expected["chunk"]
        assert b"".join(decrypt_chunks(ref, chunks)) == plaintext


def test_the_written_out_chunks_decrypt_with_the_key() -> None:
    [hello] = [v for v in _load() if v["name"] == "hello"]
    ref, _ = encrypt_bytes(bytes.fromhex(hello["key"]), bytes.fromhex(hello["plaintext"]))
    chunk = bytes.fromhex(hello["chunks"][0]["chunk"])
    assert b"".join(decrypt_chunks(ref, [chunk])) == b"hello, kith"
