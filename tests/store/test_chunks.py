"""Schema 4: which attachment chunks we hold (SQLite) and the chunk files (disk)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.files.attachment import chunk_hash
from node.group.events import EventId, GroupId
from node.store import GroupRow, Store, schema
from node.store.chunks import ChunkStore

G = GroupId(b"\x01" * 32)
E1, E2 = EventId(b"\x0a" * 32), EventId(b"\x0b" * 32)


def test_chunk_rows_and_orphans(tmp_path: Path) -> None:
    a, b = chunk_hash(b"a"), chunk_hash(b"b")
    with Store.open(tmp_path / "kith.db") as store:
        assert schema.user_version(store._db()) == len(schema.MIGRATIONS) >= 4
        store.add_group(GroupRow(G, "g", "private", 1.0))
        store.add_chunk(G, E1, 0, a, 1)
        store.add_chunk(G, E1, 1, b, 1)
        store.add_chunk(G, E1, 1, b, 1)  # again: no change
        store.add_chunk(G, E2, 0, a, 1)  # the same bytes in another file
        assert sorted(store.chunks()) == sorted([(G, E1, 0, a), (G, E1, 1, b), (G, E2, 0, a)])
        assert store.forget_chunks(E1) == [b]  # a is still used by E2
        assert store.forget_chunks(E2) == [a]
        assert store.chunks() == []


def test_a_version_3_file_gains_the_chunks_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, schema.MIGRATIONS[:3])
    conn.execute("INSERT INTO groups VALUES (?, 'g', 'private', 1.0, 0)", (G,))
    conn.close()
    with Store.open(path) as store:
        store.add_chunk(G, E1, 0, chunk_hash(b""), 0)
        assert len(store.chunks()) == 1


def test_chunk_files(tmp_path: Path) -> None:
    chunks = ChunkStore(tmp_path / "chunks")
    data = b"x" * 1000
    address = chunk_hash(data)
    assert chunks.get(address) is None and not chunks.has(address)
    with pytest.raises(ValueError, match="does not match"):
        chunks.put(address, data + b"!")
    chunks.put(address, data, durable=True)
    assert chunks.get(address) == data
    assert chunks.path(address).stat().st_mode & 0o777 == 0o600
    assert not list(chunks.root.rglob("*.tmp"))
    chunks.path(address).write_bytes(b"rot")  # damaged on disk: missing, and removed
    assert chunks.get(address) is None and not chunks.has(address)
    chunks.put(address, data)
    chunks.remove(address)
    chunks.remove(address)  # idempotent
    assert not chunks.has(address)
