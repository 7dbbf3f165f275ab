"""The node's SQLite store: groups, events, keys and receipts (no protocol logic).

Theory of operation
-------------------
One SQLite file per node, opened with the stdlib ``sqlite3`` module in autocommit mode
(``isolation_level=None``): the module never starts or ends a transaction behind our
back. Each write method is one SQL statement, so outside ``transaction()`` it commits by
itself, and inside it becomes part of the caller's transaction.

Durability: the file is in WAL mode with ``synchronous=FULL``, so a commit returns only
after its WAL frames are fsynced; a committed event survives kill -9 and power loss, an
uncommitted one vanishes. ``secure_delete`` zeroes the space freed when a row is
overwritten or deleted, so an old chain key does not linger in the main file (the WAL may
hold old page images until it is checkpointed and overwritten).

``transaction()`` is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if the block raises).
It is re-entrant: a nested ``transaction()`` joins the outer one as a ``SAVEPOINT``, so
nothing is committed before the outermost block ends, and an exception that escapes only
the inner block undoes only the inner block's writes.

Threads and tasks: one connection, not thread-safe by itself. It is opened with
``check_same_thread=False`` so it may be closed or handed off from another thread, but
callers must serialise access: in Kith every call comes from the trio thread, and no code
may ``await`` inside a ``transaction()`` block (another task would write into it).

Every ``sqlite3`` failure is turned into a one-line ``StorageError`` naming the file and
the operation, with the ``sqlite3`` exception chained as its cause. A failure that may
pass by itself (a full disk: ``SQLITE_FULL``; an I/O error; the database locked by
another program for longer than ``BUSY_TIMEOUT_MS``) is a ``StorageUnavailableError``
with a short ``reason``: SQLite has undone the statement (and a failed ``COMMIT`` is
rolled back here), so the caller may run the same writes again later and nothing is
stored twice or half.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from node.errors import StorageError, StorageUnavailableError
from node.ids import EventId, GroupId, PeerId
from node.store import schema
from node.store.key_rows import KeyRows, _check_integer

#: Milliseconds a statement waits for another connection's lock before failing.
BUSY_TIMEOUT_MS = 5000
#: Oldest SQLite with STRICT tables.
MIN_SQLITE = (3, 37, 0)

_SKIPPED_RECORD = struct.Struct(">Q32s")
_MESSAGE_KEY_LEN = 32


@dataclass(frozen=True, slots=True)
class GroupRow:
    id: GroupId
    name: str
    mode: str
    joined_at: float
    left: bool = False


@dataclass(frozen=True, slots=True)
class EventRow:
    group: GroupId
    id: EventId
    author: PeerId
    seq: int
    lamport: int
    kind: int
    raw: bytes  # the encoded event, exactly as received
    received_at: float
    text: str | None = None  # decrypted message text (None: not a message, or undecryptable)
    content: bytes | None = None  # the decrypted content (node.group.content), if any


#: SQLite result codes (``sqlite_errorname`` prefixes) of failures that may pass by
#: themselves, with what a user is told.
_TRANSIENT = (("SQLITE_FULL", "disk full"), ("SQLITE_IOERR", "disk I/O error"),
              ("SQLITE_BUSY", "database locked by another program"),
              ("SQLITE_LOCKED", "database locked by another program"))


def storage_error(message: str, exc: sqlite3.Error | OverflowError) -> StorageError:
    """``StorageError(message)``, or ``StorageUnavailableError`` if ``exc`` may pass."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, reason in _TRANSIENT:
        if name.startswith(prefix):
            return StorageUnavailableError(message, reason)
    return StorageError(message)


class SeqConflictError(StorageError):
    """``add_event`` met a *different* stored event with the same (group, author, seq).

    The caller treats this as an equivocation; ``existing`` is the id already stored.
    """

    def __init__(
        self, message: str, group: GroupId, author: PeerId, seq: int, existing: EventId
    ) -> None:
        super().__init__(message)
        self.group = group
        self.author = author
        self.seq = seq
        self.existing = existing


_GROUP_COLUMNS = "id, name, mode, joined_at, has_left"
_EVENT_COLUMNS = "group_id, id, author, seq, lamport, kind, raw, received_at, text, content"


def _group_row(r: Any) -> GroupRow:
    return GroupRow(GroupId(r[0]), r[1], r[2], r[3], bool(r[4]))


def _event_row(r: Any) -> EventRow:
    return EventRow(
        group=GroupId(r[0]), id=EventId(r[1]), author=PeerId(r[2]), seq=r[3], lamport=r[4],
        kind=r[5], raw=r[6], received_at=r[7], text=r[8], content=r[9],
    )


def _create_file(path: Path) -> None:
    """Create the parent directory (0700) and an empty database file (0600) if missing."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
        finally:
            os.close(fd)
        # Make the new directory entry durable too (SQLite does this for its WAL itself).
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot create database {path}: {exc.strerror or exc}") from exc


class Store(KeyRows):
    """One node's database. Open with ``Store.open(path)``; see the module docstring."""

    __slots__ = ("_conn", "_depth", "path")

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._depth = 0
        self.path = path

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if missing) the database at ``path`` and bring its schema up to date."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StorageError(
                f"Kith needs SQLite 3.37 or newer; this Python has {sqlite3.sqlite_version}"
            )
        _create_file(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"database {path} cannot use WAL mode (journal mode {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
            schema.check_application(conn)
            # Looked up on the module at call time, so tests can add a migration.
            schema.migrate(conn, schema.MIGRATIONS)
        except schema.SchemaError as exc:
            conn.close()
            raise StorageError(f"database {path} {exc}") from exc
        except sqlite3.Error as exc:
            conn.close()
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise StorageError(
                    f"database {path} is corrupt or not a database ({exc})"
                ) from exc
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        """Close the database (idempotent). An open transaction is rolled back."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot close database {self.path}: {exc}") from exc

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"database {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OverflowError) as exc:  # OverflowError: beyond 64 bits
            raise storage_error(f"cannot {action} in {self.path}: {exc}", exc) from exc

    def _write(self, action: str, sql: str, params: tuple[object, ...]) -> int:
        """Run one write statement; return the number of rows it changed."""
        with self._errors(action):
            return self._db().execute(sql, params).rowcount

    def _fetchall(self, action: str, sql: str, params: tuple[object, ...]) -> list[Any]:
        with self._errors(action):
            return self._db().execute(sql, params).fetchall()

    def _fetchone(self, action: str, sql: str, params: tuple[object, ...]) -> Any:
        with self._errors(action):
            return self._db().execute(sql, params).fetchone()

    @contextlib.contextmanager
    def busy_timeout(self, ms: int) -> Iterator[None]:
        """Wait at most ``ms`` for another connection's lock inside the block."""
        conn = self._db()
        with self._errors("set the busy timeout"):
            conn.execute(f"PRAGMA busy_timeout = {int(ms):d}")
        try:
            yield
        finally:
            with self._errors("set the busy timeout"):
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")

    @property
    def in_transaction(self) -> bool:
        """True inside a ``transaction()`` block."""
        return self._depth > 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically: ``with store.transaction(): ...``.

        The outermost block commits when it ends normally and rolls back if anything
        (including ``BaseException``) escapes it. A nested block joins the outer
        transaction as a savepoint.
        """
        conn = self._db()
        depth = self._depth
        savepoint = f"kith_{depth}"
        with self._errors("begin a transaction"):
            conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
        self._depth = depth + 1
        try:
            yield
        except BaseException:
            self._depth = depth
            with contextlib.suppress(sqlite3.Error):  # report the original error, not this
                if depth == 0:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute(f"ROLLBACK TO {savepoint}")
                    conn.execute(f"RELEASE {savepoint}")
            raise
        self._depth = depth
        if depth > 0:
            with self._errors("end a nested transaction"):
                conn.execute(f"RELEASE {savepoint}")
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise storage_error(f"cannot commit to {self.path}: {exc}", exc) from exc

    # -- meta --------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        r = self._fetchone("read setting", "SELECT value FROM meta WHERE key = ?", (key,))
        return None if r is None else str(r[0])

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "store setting",
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- groups ------------------------------------------------------------------------

    def add_group(self, row: GroupRow) -> None:
        """Store a new group; a group id already stored raises ``StorageError``."""
        with self._errors("store group"):
            try:
                self._db().execute(
                    "INSERT INTO groups (id, name, mode, joined_at, has_left)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (row.id, row.name, row.mode, row.joined_at, int(row.left)),
                )
            except sqlite3.IntegrityError as exc:
                if self.group(row.id) is None:
                    raise
                raise StorageError(f"group {row.id.hex()} is already stored") from exc

    def group(self, group: GroupId) -> GroupRow | None:
        r = self._fetchone("read group", f"SELECT {_GROUP_COLUMNS} FROM groups WHERE id = ?",
                           (group,))
        return None if r is None else _group_row(r)

    def groups(self) -> list[GroupRow]:
        """Every group, in ``joined_at`` order (ties in insertion order)."""
        rows = self._fetchall(
            "read groups", f"SELECT {_GROUP_COLUMNS} FROM groups ORDER BY joined_at, rowid", ()
        )
        return [_group_row(r) for r in rows]

    def set_group_name(self, group: GroupId, name: str) -> None:
        if not self._write("rename group", "UPDATE groups SET name = ? WHERE id = ?",
                           (name, group)):
            raise StorageError(f"cannot rename group {group.hex()}: not stored")

    def set_group_left(self, group: GroupId, left: bool) -> None:
        if not self._write("mark group left", "UPDATE groups SET has_left = ? WHERE id = ?",
                           (int(left), group)):
            raise StorageError(f"cannot mark group {group.hex()} left: not stored")

    # -- events ------------------------------------------------------------------------

    def add_event(self, row: EventRow) -> bool:
        """Store an event; ``False`` (nothing written) if its id is already stored.

        A different event with the same (group, author, seq) raises ``SeqConflictError``
        (a ``StorageError``) and the stored event is kept. An event of a group that is not
        stored raises ``StorageError``.
        """
        for value, what in ((row.seq, "seq"), (row.lamport, "lamport"), (row.kind, "kind")):
            _check_integer(value, what)
        with self._errors("store event"):
            conn = self._db()
            try:
                cursor = conn.execute(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    (row.group, row.id, row.author, int(row.seq), int(row.lamport),
                     int(row.kind), row.raw, row.received_at, row.text, row.content),
                )
            except sqlite3.IntegrityError as exc:
                r = conn.execute(
                    "SELECT id FROM events WHERE group_id = ? AND author = ? AND seq = ?",
                    (row.group, row.author, int(row.seq)),
                ).fetchone()
                if r is None:
                    raise  # not a seq conflict: most likely the group is not stored
                raise SeqConflictError(
                    f"event {row.id.hex()} has the same author and seq ({row.seq}) as stored"
                    f" event {r[0].hex()}",
                    row.group, row.author, row.seq, EventId(r[0]),
                ) from exc
            return cursor.rowcount == 1

    def add_events(self, rows: Sequence[EventRow]) -> None:
        """``add_event`` for each of ``rows`` in order, as one statement (a batch of
        received or authored events costs one call into SQLite, not one per row). An
        id already stored is skipped; a seq conflict raises as ``add_event`` does."""
        if len(rows) == 1:
            self.add_event(rows[0])
            return
        for row in rows:
            for value, what in ((row.seq, "seq"), (row.lamport, "lamport"), (row.kind, "kind")):
                _check_integer(value, what)
        with self._errors("store events"):
            try:
                self._db().executemany(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    [(r.group, r.id, r.author, int(r.seq), int(r.lamport), int(r.kind), r.raw,
                      r.received_at, r.text, r.content) for r in rows],
                )
                return
            except sqlite3.IntegrityError:
                pass  # one of them conflicts: find which, row by row, with add_event's error
        for row in rows:  # (those already written are skipped by their ids)
            self.add_event(row)

    def events(self, group: GroupId) -> list[EventRow]:
        """The group's events in insertion order."""
        rows = self._fetchall(
            "read events",
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE group_id = ? ORDER BY pos", (group,),
        )
        return [_event_row(r) for r in rows]

    def events_page(
        self, group: GroupId, after: int = 0, limit: int = 256
    ) -> list[tuple[int, EventRow]]:
        """Up to ``limit`` events stored after position ``after``, with their positions.

        For streaming a long history without holding it in memory: pass the last
        position of one page as ``after`` of the next.
        """
        rows = self._fetchall(
            "read events",
            f"SELECT pos, {_EVENT_COLUMNS} FROM events WHERE group_id = ? AND pos > ? "
            "ORDER BY pos LIMIT ?",
            (group, after, limit),
        )
        return [(int(r[0]), _event_row(r[1:])) for r in rows]

    def position(self, group: GroupId, author: PeerId, seq: int) -> int | None:
        """Where event (author, seq) of ``group`` is stored (its ``pos``), if it is."""
        r = self._fetchone("read event",
                           "SELECT pos FROM events WHERE group_id = ? AND author = ? AND seq = ?",
                           (group, author, seq))
        return None if r is None else int(r[0])

    def event(self, id: EventId) -> EventRow | None:
        r = self._fetchone("read event", f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?",
                           (id,))
        return None if r is None else _event_row(r)

    def has_event(self, id: EventId) -> bool:
        return self._fetchone("read event", "SELECT 1 FROM events WHERE id = ?", (id,)) is not None

    def set_text(self, id: EventId, text: str | None) -> None:
        if not self._write("store text", "UPDATE events SET text = ? WHERE id = ?", (text, id)):
            raise StorageError(f"cannot store the text of event {id.hex()}: event not stored")

    def set_received_at(self, id: EventId, at: float) -> None:
        """Change when a stored event counts as stored (a message ``kith send`` queued
        while the node was stopped: the time the user sent it, node.api.pending_sends)."""
        if not self._write("store time", "UPDATE events SET received_at = ? WHERE id = ?",
                           (at, id)):
            raise StorageError(f"cannot store the time of event {id.hex()}: event not stored")

    def set_content(self, id: EventId, text: str | None, content: bytes | None) -> None:
        """Store the decrypted text and content of a stored event."""
        if not self._write("store content", "UPDATE events SET text = ?, content = ? WHERE id = ?",
                           (text, content, id)):
            raise StorageError(f"cannot store the content of event {id.hex()}: event not stored")

    def erase_content(self, id: EventId) -> None:
        """Forget what a deleted message said: its text, its content and every pairwise copy.

        The signed event itself stays (it is a link in everyone's causal chain); see
        docs/threat-model.md for what remains. ``secure_delete`` zeroes the freed bytes in
        the main file; call ``checkpoint()`` after the transaction to empty the WAL too.
        """
        self._write("erase content", "UPDATE events SET text = NULL, content = NULL WHERE id = ?",
                    (id,))
        self._write("erase copies", "DELETE FROM copies WHERE event = ?", (id,))

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it (old page images go with it)."""
        with self._errors("checkpoint"):
            self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- local settings ------------------------------------------------------------------

    def set_notify_muted(self, group: GroupId, muted: bool) -> None:
        self._write(
            "store group setting",
            "INSERT INTO group_prefs (group_id, notify_muted) VALUES (?, ?)"
            " ON CONFLICT (group_id) DO UPDATE SET notify_muted = excluded.notify_muted",
            (group, int(muted)),
        )

    def notify_muted(self, group: GroupId) -> bool:
        r = self._fetchone("read group setting",
                           "SELECT notify_muted FROM group_prefs WHERE group_id = ?", (group,))
        return r is not None and bool(r[0])

    def set_read_marks(self, group: GroupId, marks: dict[PeerId, int]) -> None:
        """Raise our read position per author (never lowers one)."""
        for author, seq in marks.items():
            _check_integer(seq, "seq")
            self._write(
                "store read mark",
                "INSERT INTO read_marks (group_id, author, seq) VALUES (?, ?, ?)"
                " ON CONFLICT (group_id, author) DO UPDATE SET seq = max(seq, excluded.seq)",
                (group, author, int(seq)),
            )

    def read_marks(self, group: GroupId) -> dict[PeerId, int]:
        rows = self._fetchall("read read marks",
                              "SELECT author, seq FROM read_marks WHERE group_id = ?", (group,))
        return {PeerId(a): int(s) for a, s in rows}

    def count_events(self, group: GroupId) -> int:
        r = self._fetchone("count events", "SELECT count(*) FROM events WHERE group_id = ?",
                           (group,))
        return int(r[0])

    # -- attachment chunks (the bytes are files: node.store.chunks) ------------------------

    def add_chunk(self, group: GroupId, event: EventId, index: int, address: bytes,
                  size: int) -> None:
        """Record that we hold chunk ``index`` (at ``address``) of the file of ``event``."""
        self._write(
            "store chunk",
            "INSERT INTO chunks (event, idx, address, group_id, size) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (event, idx) DO NOTHING",
            (event, _check_integer(index, "chunk index"), address, group,
             _check_integer(size, "chunk size")),
        )

    def chunks(self) -> list[tuple[GroupId, EventId, int, bytes]]:
        """Every chunk we hold: (group, event, index, address)."""
        rows = self._fetchall("read chunks", "SELECT group_id, event, idx, address FROM chunks",
                              ())
        return [(GroupId(g), EventId(e), int(i), bytes(a)) for g, e, i, a in rows]

    def forget_chunks(self, event: EventId) -> list[bytes]:
        """Drop the chunks of ``event``'s file; return the addresses no other file uses."""
        rows = self._fetchall("read chunks", "SELECT DISTINCT address FROM chunks WHERE event = ?",
                              (event,))
        self._write("forget chunks", "DELETE FROM chunks WHERE event = ?", (event,))
        orphans = []
        for (address,) in rows:
            if self._fetchone("read chunks", "SELECT 1 FROM chunks WHERE address = ?",
                              (address,)) is None:
                orphans.append(bytes(address))
        return orphans

    def forget_chunk(self, event: EventId, index: int) -> None:
        """Drop one chunk row (its file was found missing or damaged)."""
        self._write("forget chunk", "DELETE FROM chunks WHERE event = ? AND idx = ?",
                    (event, index))

    def chunk_events(self) -> dict[EventId, GroupId]:
        """The messages whose file we hold at least one chunk of, with their group."""
        rows = self._fetchall("read chunks", "SELECT DISTINCT event, group_id FROM chunks", ())
        return {EventId(e): GroupId(g) for e, g in rows}

    # -- pruned attachments (kith files prune) -------------------------------------------

    def add_pruned(self, group: GroupId, event: EventId, at: float) -> None:
        """Record that the file of ``event`` was removed to free space."""
        self._write("store pruned file",
                    "INSERT INTO pruned_files (event, group_id, pruned_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (event) DO NOTHING", (event, group, at))

    def forget_pruned(self, event: EventId) -> None:
        """The file of ``event`` is wanted again (``kith save`` of a pruned file)."""
        self._write("forget pruned file", "DELETE FROM pruned_files WHERE event = ?", (event,))

    def pruned(self) -> set[EventId]:
        rows = self._fetchall("read pruned files", "SELECT event FROM pruned_files", ())
        return {EventId(r[0]) for r in rows}

    # -- peer names (the name each peer last gave in its handshake) ----------------------

    def set_peer_name(self, peer: PeerId, name: str, at: float) -> None:
        self._write(
            "store peer name",
            "INSERT INTO peer_names (peer, name, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (peer) DO UPDATE SET name = excluded.name, seen_at = excluded.seen_at",
            (peer, name, at),
        )

    def peer_names(self) -> dict[PeerId, str]:
        rows = self._fetchall("read peer names", "SELECT peer, name FROM peer_names", ())
        return {PeerId(p): str(n) for p, n in rows}
