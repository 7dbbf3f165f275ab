"""A full disk or a locked database is a ``StorageUnavailableError`` that undoes the write.

The faults are SQLite's own (``tests.store.faults``): the file cannot grow, or another
connection holds the write lock. Each test checks that the failed transaction left
nothing behind and that the same writes succeed once the fault is gone, which is what
the driver's retry relies on (``node.service.driver``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from node.errors import StorageError, StorageUnavailableError
from node.files.attachment import chunk_hash
from node.group.events import EventId, GroupId, Kind
from node.ids import PeerId
from node.store import EventRow, GroupRow, Store
from node.store.chunks import ChunkStore
from tests.store.faults import disk_full, locked

G = GroupId(b"\x01" * 32)
ALICE = PeerId(b"\xaa" * 32)


def row(n: int) -> EventRow:
    return EventRow(G, EventId(n.to_bytes(32, "big")), ALICE, n, n, Kind.MESSAGE,
                    b"raw-%d" % n, 1.0, text="x" * 5000)  # more than a page: the file grows


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "kith.db")
    s.add_group(GroupRow(G, "g", "private", 1.0))
    return s


def test_a_full_disk_undoes_the_whole_transaction_and_the_retry_stores_it_once(
    store: Store,
) -> None:
    with disk_full(store):
        with pytest.raises(StorageUnavailableError) as caught, store.transaction():
            store.set_group_name(G, "renamed")  # fits: no new page
            store.add_event(row(1))
        assert caught.value.reason == "disk full"
        assert "database or disk is full" in str(caught.value)
        assert store.events(G) == []
        assert store.group(G).name == "g"  # type: ignore[union-attr]
        assert not store.in_transaction
        with pytest.raises(StorageUnavailableError):  # still full: fails again, cleanly
            store.add_event(row(1))
    with store.transaction():  # space is back: the same writes
        store.set_group_name(G, "renamed")
        assert store.add_event(row(1))
    assert [e.seq for e in store.events(G)] == [1]
    assert store.group(G).name == "renamed"  # type: ignore[union-attr]
    assert store._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_locked_database_is_unavailable_until_the_lock_goes(store: Store) -> None:
    with locked(store):
        with pytest.raises(StorageUnavailableError) as caught, store.transaction():
            store.add_event(row(1))
        assert caught.value.reason == "database locked by another program"
        assert store.events(G) == []
    with store.transaction():
        store.add_event(row(1))
    assert len(store.events(G)) == 1


def test_other_failures_stay_plain_storage_errors(store: Store) -> None:
    other = GroupId(b"\x02" * 32)  # not stored: a bug or bad input, not a passing fault
    with pytest.raises(StorageError) as caught:
        store.add_event(EventRow(other, EventId(b"\x09" * 32), ALICE, 1, 1, Kind.MESSAGE,
                                 b"r", 1.0))
    assert not isinstance(caught.value, StorageUnavailableError)


def test_a_chunk_that_meets_a_full_disk_leaves_no_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = ChunkStore(tmp_path / "chunks")
    data = os.urandom(3000)
    address = chunk_hash(data)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr("node.store.chunks.os.write", full)
        with pytest.raises(StorageUnavailableError) as caught:
            chunks.put(address, data)
    assert caught.value.reason == "disk full"
    assert [p for p in (tmp_path / "chunks").rglob("*") if p.is_file()] == []
    assert chunks.get(address) is None
    chunks.put(address, data)  # space is back
    assert chunks.get(address) == data
