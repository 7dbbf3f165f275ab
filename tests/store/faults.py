"""Storage faults for tests, injected into SQLite itself (the lowest layer).

``disk_full(store)`` makes the store's file unable to grow, exactly as a full disk
does: SQLite fails the write with ``SQLITE_FULL`` ("database or disk is full") and
undoes it. ``locked(path)`` holds the database's write lock from a second
connection, so the store's writes fail with ``SQLITE_BUSY`` once its busy timeout
(set to zero here) runs out. Leaving either block makes the store writable again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from node.store import Store

#: SQLite's default page limit (no limit in practice).
_NO_LIMIT = 4_294_967_294


@contextmanager
def disk_full(store: Store) -> Iterator[None]:
    """No page can be added to ``store``'s file inside the block."""
    conn = store._db()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {int(pages)}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA max_page_count = {_NO_LIMIT}")


@contextmanager
def locked(store: Store) -> Iterator[None]:
    """Another connection holds ``store``'s write lock inside the block."""
    import sqlite3

    conn = store._db()
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
