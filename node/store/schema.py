"""The database schema, as a list of migrations, and the code that applies them.

Theory of operation
-------------------
The schema version of a file is SQLite's ``PRAGMA user_version`` (0 for a new, empty
file). ``MIGRATIONS[n]`` is an SQL script that moves the schema from version ``n`` to
``n + 1``; a file is brought up to date by applying every migration from its version on,
each in its own ``BEGIN IMMEDIATE`` transaction together with the new ``user_version``, so a
crash mid-upgrade leaves the file at a version it really has. The version is read inside
that transaction: two processes opening the same old file cannot both apply a migration.

Rules for whoever adds a migration: never edit a migration that has shipped, append a new
one; keep each statement valid inside a transaction (no ``VACUUM``, no
``PRAGMA journal_mode``); and remember that ``foreign_keys`` is on while migrating.

``PRAGMA application_id`` marks the file as Kith's, so that opening some other program's
SQLite database is refused instead of "upgraded".

Every table is ``STRICT`` (SQLite >= 3.37): a column holds the declared type or the insert
fails, so a bug that passes ``str`` for ``bytes`` surfaces at once. Ids (group, event,
peer) are BLOBs of their raw bytes. Each per-group row references ``groups(id)``; rows that
concern an event (copies, deliveries, equivocations) deliberately do *not* reference
``events(id)``, because a pairwise copy or a receipt may be stored before or without the
event it concerns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

#: ``PRAGMA application_id`` of a Kith database: "Kith" in ASCII.
APPLICATION_ID = 0x4B697468

MIGRATIONS: list[str] = [
    # 0 -> 1: the initial schema.
    f"""
    PRAGMA application_id = {APPLICATION_ID};

    -- Small key/value settings of the node (display name, ...).
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- The groups this node has joined (and possibly left since).
    CREATE TABLE groups (
        id        BLOB PRIMARY KEY,
        name      TEXT NOT NULL,
        mode      TEXT NOT NULL,
        joined_at REAL NOT NULL,
        has_left  INTEGER NOT NULL DEFAULT 0 CHECK (has_left IN (0, 1))
    ) STRICT;

    -- Every event stored, exactly as received. pos (the rowid) is the insertion order;
    -- id is the event id (unique, so it is the natural key).
    CREATE TABLE events (
        pos         INTEGER PRIMARY KEY,
        id          BLOB NOT NULL UNIQUE,
        group_id    BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        author      BLOB NOT NULL,
        seq         INTEGER NOT NULL,
        lamport     INTEGER NOT NULL,
        kind        INTEGER NOT NULL,
        raw         BLOB NOT NULL,
        received_at REAL NOT NULL,
        text        TEXT,
        UNIQUE (group_id, author, seq)
    ) STRICT;
    -- One group's events in insertion order (the rowid is implicitly the last column).
    CREATE INDEX events_by_group ON events (group_id);

    -- Pairwise copies: the ciphertext of one event for one recipient.
    CREATE TABLE copies (
        event     BLOB NOT NULL,
        recipient BLOB NOT NULL,
        group_id  BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        blob      BLOB NOT NULL,
        PRIMARY KEY (event, recipient)
    ) STRICT;
    CREATE INDEX copies_by_group ON copies (group_id);

    -- Our own sender key for each group: one current row per group. recipients is the
    -- sorted concatenation of the 32-byte peer ids the key has been given to.
    CREATE TABLE own_keys (
        group_id     BLOB PRIMARY KEY REFERENCES groups (id) ON DELETE CASCADE,
        epoch        INTEGER NOT NULL,
        chain_key    BLOB NOT NULL,
        next_index   INTEGER NOT NULL,
        signing_seed BLOB NOT NULL,
        recipients   BLOB NOT NULL
    ) STRICT;

    -- What we hold of other members' sender keys, per (group, author, epoch). skipped is
    -- a packed list of 40-byte records: big-endian u64 index, 32-byte message key.
    CREATE TABLE peer_keys (
        group_id       BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        author         BLOB NOT NULL,
        epoch          INTEGER NOT NULL,
        chain_key      BLOB NOT NULL,
        next_index     INTEGER NOT NULL,
        signing_public BLOB NOT NULL,
        skipped        BLOB NOT NULL,
        PRIMARY KEY (group_id, author, epoch)
    ) STRICT;

    -- Delivery receipts for our own events: member has stored event (first report kept).
    CREATE TABLE deliveries (
        event    BLOB NOT NULL,
        member   BLOB NOT NULL,
        group_id BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        at       REAL NOT NULL,
        PRIMARY KEY (event, member)
    ) STRICT;
    CREATE INDEX deliveries_by_group ON deliveries (group_id);

    -- Equivocations: a second, different event with the same (group, author, seq) as the
    -- stored event first. second_digest (BLAKE2b-256 of second_raw) only deduplicates.
    CREATE TABLE equivocations (
        pos           INTEGER PRIMARY KEY,
        group_id      BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        author        BLOB NOT NULL,
        seq           INTEGER NOT NULL,
        first         BLOB NOT NULL,
        second_raw    BLOB NOT NULL,
        second_digest BLOB NOT NULL,
        at            REAL NOT NULL,
        UNIQUE (group_id, author, seq, second_digest)
    ) STRICT;
    """,
    # 1 -> 2: groups created with --share-history keep each epoch's starting sender key,
    # to hand to members who join later.
    """
    CREATE TABLE own_history (
        group_id      BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        epoch         INTEGER NOT NULL,
        chain_key     BLOB NOT NULL,
        next_index    INTEGER NOT NULL,
        signing_seed  BLOB NOT NULL,
        PRIMARY KEY (group_id, epoch)
    ) STRICT;
    """,
    # 2 -> 3: message features. content is the decrypted message content (msgpack, see
    # node.group.content; NULL when unreadable or deleted). Local, never-sent settings: a
    # group's notifications muted, and our own read position per author (for unread counts,
    # kept even with read receipts off).
    """
    ALTER TABLE events ADD COLUMN content BLOB;

    CREATE TABLE group_prefs (
        group_id     BLOB PRIMARY KEY REFERENCES groups (id) ON DELETE CASCADE,
        notify_muted INTEGER NOT NULL DEFAULT 0 CHECK (notify_muted IN (0, 1))
    ) STRICT;

    CREATE TABLE read_marks (
        group_id BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        author   BLOB NOT NULL,
        seq      INTEGER NOT NULL,
        PRIMARY KEY (group_id, author)
    ) STRICT;
    """,
    # 3 -> 4: attachments. The encrypted chunks are files under chunks/ in the data
    # directory, named by their content address (100 MiB of blobs would bloat the WAL and
    # every checkpoint); this table lists the chunks we hold, per message (``event``, the
    # MESSAGE whose content names the file) and position. An address may appear under
    # several messages; its file goes when the last row naming it does.
    """
    CREATE TABLE chunks (
        event    BLOB NOT NULL,
        idx      INTEGER NOT NULL,
        address  BLOB NOT NULL,
        group_id BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        size     INTEGER NOT NULL,
        PRIMARY KEY (event, idx)
    ) STRICT;
    CREATE INDEX chunks_by_address ON chunks (address);
    """,
    # 4 -> 5: local bookkeeping of peers and attachments. peer_names: the display name
    # each peer last gave in its handshake, so a restarted node still names the authors
    # of stored messages when they are away. pruned_files: messages whose file was removed
    # to free space (``kith files prune``), so the node does not fetch it back by itself.
    """
    CREATE TABLE peer_names (
        peer    BLOB PRIMARY KEY,
        name    TEXT NOT NULL,
        seen_at REAL NOT NULL
    ) STRICT;

    CREATE TABLE pruned_files (
        event     BLOB PRIMARY KEY,
        group_id  BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
        pruned_at REAL NOT NULL
    ) STRICT;
    """,
]


class SchemaError(Exception):
    """The file's schema cannot be used; ``Store.open`` turns this into a StorageError."""


def split_statements(script: str) -> list[str]:
    """Split an SQL script into statements (``sqlite3`` executes one at a time).

    ``sqlite3.complete_statement`` knows about string literals, comments and trigger
    bodies, so a ``;`` inside any of them does not end a statement.
    """
    statements: list[str] = []
    pending = ""
    pieces = script.split(";")
    for piece in pieces[:-1]:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    rest = (pending + pieces[-1]).strip()
    if any(line.strip() and not line.strip().startswith("--") for line in rest.splitlines()):
        raise ValueError(f"migration script ends with an unterminated statement: {rest!r}")
    return statements


def user_version(conn: sqlite3.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert isinstance(version, int)
    return version


def check_application(conn: sqlite3.Connection) -> None:
    """Refuse a database that some other program made (raise ``SchemaError``)."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id == APPLICATION_ID:
        return
    if app_id == 0 and user_version(conn) == 0:
        objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if objects == 0:
            return  # a new, empty file
    raise SchemaError("is not a Kith database")


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """Bring the schema of ``conn`` up to ``len(migrations)``; return the final version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no transaction
    open. Raises ``SchemaError`` for a file newer than ``migrations`` and lets
    ``sqlite3.Error`` through for anything else; a failed migration is rolled back whole.
    """
    target = len(migrations)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(conn)
            if version > target:
                raise SchemaError(f"is from a newer Kith (schema {version}); upgrade Kith")
            if version == target:
                conn.execute("COMMIT")
                return version
            for statement in split_statements(migrations[version]):
                conn.execute(statement)
            # PRAGMA takes no bound parameters; version is an int we computed.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
