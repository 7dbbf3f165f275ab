"""Schema 3: message content, erasing a deleted message, local read marks and mute."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.group.events import EventId, GroupId
from node.ids import PeerId
from node.store import EventRow, GroupRow, Store, schema

G = GroupId(b"\x01" * 32)
A = PeerId(b"\x02" * 32)
SECRET = "the launch code is 0000-swordfish"


def _event(n: int, text: str | None) -> EventRow:
    return EventRow(G, EventId(bytes([n]) * 32), A, n, n, 10, b"raw-%d" % n, 1.0, text,
                    text.encode() if text else None)


def test_erase_content_leaves_no_trace_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kith.db"
    with Store.open(path) as store:
        store.add_group(GroupRow(G, "g", "pairwise", 1.0))
        with store.transaction():
            store.add_event(_event(1, SECRET))
            store.add_copy(G, EventId(b"\x01" * 32), A, b"copy:" + SECRET.encode())
            store.add_event(_event(2, "harmless"))
        store.checkpoint()
        assert SECRET.encode() in path.read_bytes()
        with store.transaction():
            store.erase_content(EventId(b"\x01" * 32))
        store.checkpoint()
        row = store.event(EventId(b"\x01" * 32))
        assert row is not None and row.raw == b"raw-1"  # the signed event (tombstone) stays
        assert (row.text, row.content) == (None, None)
        assert store.copies(EventId(b"\x01" * 32)) == {}
        assert store.event(EventId(b"\x02" * 32)).text == "harmless"  # type: ignore[union-attr]
    wal = path.with_name(path.name + "-wal")
    data = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert SECRET.encode() not in data and b"swordfish" not in data


def test_local_settings_round_trip(tmp_path: Path) -> None:
    with Store.open(tmp_path / "kith.db") as store:
        store.add_group(GroupRow(G, "g", "private", 1.0))
        assert not store.notify_muted(G) and store.read_marks(G) == {}
        store.set_notify_muted(G, True)
        store.set_read_marks(G, {A: 5})
        store.set_read_marks(G, {A: 3})  # never lowers
        assert store.notify_muted(G) and store.read_marks(G) == {A: 5}


def test_a_version_2_file_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, schema.MIGRATIONS[:2])
    conn.execute("INSERT INTO groups VALUES (?, 'g', 'private', 1.0, 0)", (G,))
    conn.execute("INSERT INTO events (id, group_id, author, seq, lamport, kind, raw,"
                 " received_at, text) VALUES (?, ?, ?, 1, 1, 10, x'00', 1.0, 'old')",
                 (b"\x05" * 32, G, A))
    conn.close()
    with Store.open(path) as store:
        row = store.event(EventId(b"\x05" * 32))
        assert row is not None and (row.text, row.content) == ("old", None)
        assert schema.user_version(store._db()) == len(schema.MIGRATIONS) >= 3
