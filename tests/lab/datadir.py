"""A node's data directory from the outside: its stored events, and when it changes.

``stored_events`` reads a *copy* of the database (with its WAL), so it also works on
the files of a node killed mid-write and leaves them for the restart to recover;
``count_messages`` reads the live database read-only. ``DirectoryWatch`` (inotify)
wakes a test when a node writes to its data directory: the one outside sign of
progress while a node is busy inside one long request.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from node.group.bodies import PrivateMessage, decode_body
from node.group.events import Kind, decode_event

DATABASE = "kith.db"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of a node's ``events`` table, decoded."""

    id: str  # hex
    author: bytes
    seq: int
    epoch: int
    kind: Kind
    index: int | None  # a private MESSAGE's sender-chain index


def stored_events(data_dir: Path) -> list[StoredEvent]:
    """Every event a node has stored, in storage order, read from a copy of its database.

    The copy (with its WAL) is taken as the files are now, so it also works on the
    files of a node killed mid-write, and the node's own files are left untouched
    for its restart to recover.
    """
    with tempfile.TemporaryDirectory(prefix="kith-db-") as scratch:
        for suffix in ("", "-wal", "-shm"):
            source = data_dir / f"{DATABASE}{suffix}"
            if source.exists():
                shutil.copyfile(source, Path(scratch) / f"{DATABASE}{suffix}")
        conn = sqlite3.connect(Path(scratch) / DATABASE)
        try:
            rows = conn.execute("SELECT raw FROM events ORDER BY pos").fetchall()
        finally:
            conn.close()
    out = []
    for (raw,) in rows:
        event = decode_event(raw)
        index = None
        if event.kind is Kind.MESSAGE:
            body = decode_body(Kind.MESSAGE, event.body, mode="private")
            if isinstance(body, PrivateMessage):
                index = body.index
        out.append(StoredEvent(event.id.hex(), bytes(event.author), event.seq, event.epoch,
                               event.kind, index))
    return out


def count_messages(data_dir: Path, author: bytes) -> int:
    """How many MESSAGE events by ``author`` a running node has committed (read-only)."""
    uri = f"file:{data_dir / DATABASE}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM events WHERE author = ? AND kind = ?",
                           (author, int(Kind.MESSAGE))).fetchone()
    finally:
        conn.close()
    return int(row[0])


_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100


class DirectoryWatch:
    """inotify on one directory: ``await changed()`` returns once a file in it was written.

    Changes between two calls are not lost: they leave the descriptor readable.
    """

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        watch = libc.inotify_add_watch(self._fd, os.fsencode(directory), _IN_MODIFY | _IN_CREATE)
        if watch < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, f"cannot watch {directory}")

    async def changed(self) -> None:
        await trio.lowlevel.wait_readable(self._fd)
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        trio.lowlevel.notify_closing(self._fd)
        os.close(self._fd)

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
