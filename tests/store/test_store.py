"""Tests for the SQLite store (node/store): round trips, atomicity, durability, schema."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.crypto.sender_keys import OwnSenderKey, SenderKeyState
from node.errors import StorageError
from node.group.events import EventId, GroupId, Kind
from node.ids import PeerId
from node.store import EventRow, GroupRow, SeqConflictError, Store, schema

REPO = Path(__file__).resolve().parents[2]

G1 = GroupId(b"\x01" * 32)
G2 = GroupId(b"\x02" * 32)
ALICE = PeerId(b"\xaa" * 32)
BOB = PeerId(b"\xbb" * 32)
CAROL = PeerId(b"\xcc" * 32)


def eid(n: int) -> EventId:
    return EventId(n.to_bytes(32, "big"))


def event(n: int, group: GroupId = G1, author: PeerId = ALICE, seq: int | None = None,
          text: str | None = None) -> EventRow:
    return EventRow(
        group=group, id=eid(n), author=author, seq=n if seq is None else seq, lamport=n + 100,
        kind=Kind.MESSAGE, raw=b"raw-%d" % n, received_at=1000.0 + n, text=text,
    )


def own_key(index: int = 7) -> OwnSenderKey:
    return OwnSenderKey(chain_key=b"\x11" * 32, index=index, signing_seed=b"\x22" * 32)


def peer_state(index: int = 9, skipped: tuple[tuple[int, bytes], ...] = ()) -> SenderKeyState:
    return SenderKeyState(b"\x33" * 32, index, b"\x44" * 32, skipped)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "kith.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    s = Store.open(db_path)
    s.add_group(GroupRow(G1, "friends", "private", 10.0))
    return s


# -- opening -------------------------------------------------------------------------


def test_open_creates_parent_and_file_with_mode_0600(db_path: Path) -> None:
    old = os.umask(0)  # a permissive umask must not leak into the file mode
    try:
        with Store.open(db_path) as s:
            s.set_meta("name", "alice")
            assert s.path == db_path
            wal = db_path.with_name(db_path.name + "-wal")
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


def test_pragmas(store: Store, db_path: Path) -> None:
    conn = store._db()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    store.close()
    # WAL is a property of the file: a plain connection sees it too.
    plain = sqlite3.connect(db_path)
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plain.close()


def test_reopen_keeps_everything(db_path: Path) -> None:
    with Store.open(db_path) as s:
        s.add_group(GroupRow(G1, "friends", "private", 10.0))
        s.set_meta("name", "alice")
        s.add_event(event(1, text="hi"))
        s.save_own_key(G1, 2, own_key(), [BOB])
    with Store.open(db_path) as s:
        assert s.get_meta("name") == "alice"
        assert s.groups() == [GroupRow(G1, "friends", "private", 10.0)]
        assert s.events(G1) == [event(1, text="hi")]
        assert s.own_key(G1) == (2, own_key(), frozenset({BOB}))


def test_closed_store_raises(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="is closed"):
        store.groups()


def test_corrupt_file_is_a_clear_storage_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(os.urandom(8192))
    with pytest.raises(StorageError, match=r"is corrupt or not a database") as info:
        Store.open(db_path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_another_programs_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    other = sqlite3.connect(db_path)
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(StorageError, match="is not a Kith database"):
        Store.open(db_path)


def test_unwritable_location_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot create database"):
        Store.open(tmp_path / "file" / "kith.db")


# -- schema versions -----------------------------------------------------------------


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store.open(db_path).close()
    newer = len(schema.MIGRATIONS) + 1
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError) as info:
        Store.open(db_path)
    assert str(info.value) == (
        f"database {db_path} is from a newer Kith (schema {newer}); upgrade Kith"
    )


def test_migration_applies_to_an_older_file(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(db_path) as s:
        s.add_group(GroupRow(G1, "friends", "private", 10.0))
        s.add_event(event(1))
    old_version = len(schema.MIGRATIONS)
    monkeypatch.setattr(schema, "MIGRATIONS", [
        *schema.MIGRATIONS,
        """
        CREATE TABLE extra (x INTEGER NOT NULL) STRICT;  -- a comment; with a semicolon
        INSERT INTO extra (x) SELECT count(*) FROM events;
        """,
    ])
    for _ in range(2):  # the second open finds nothing to do
        with Store.open(db_path) as s:
            conn = s._db()
            assert conn.execute("PRAGMA user_version").fetchone()[0] == old_version + 1
            assert conn.execute("SELECT x FROM extra").fetchall() == [(1,)]
            assert s.events(G1) == [event(1)]


def test_failed_migration_rolls_back_whole(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(db_path).close()
    old_version = len(schema.MIGRATIONS)
    monkeypatch.setattr(schema, "MIGRATIONS", [
        *schema.MIGRATIONS,
        "CREATE TABLE extra (x INTEGER) STRICT; INSERT INTO no_such_table VALUES (1);",
    ])
    with pytest.raises(StorageError, match="no such table"):
        Store.open(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == old_version
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
    assert "extra" not in tables
    conn.close()


def test_fresh_file_migrates_from_zero(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert schema.migrate(conn, schema.MIGRATIONS) == len(schema.MIGRATIONS)
    assert schema.migrate(conn, schema.MIGRATIONS) == len(schema.MIGRATIONS)
    conn.close()


def test_split_statements() -> None:
    assert schema.split_statements("SELECT ';'; -- x; y\nSELECT 2;\n") == [
        "SELECT ';';", "-- x; y\nSELECT 2;",
    ]
    with pytest.raises(ValueError, match="unterminated"):
        schema.split_statements("SELECT 1; SELECT 2")
    assert schema.split_statements(";; SELECT 1; -- trailing comment\n") == ["SELECT 1;"]


# -- meta and groups -----------------------------------------------------------------


def test_meta_round_trip(store: Store) -> None:
    assert store.get_meta("name") is None
    store.set_meta("name", "alice")
    store.set_meta("name", "alice b")
    assert store.get_meta("name") == "alice b"


def test_groups_round_trip(store: Store) -> None:
    store.add_group(GroupRow(G2, "work", "pairwise", 5.0, left=True))
    assert store.groups() == [
        GroupRow(G2, "work", "pairwise", 5.0, left=True),
        GroupRow(G1, "friends", "private", 10.0),
    ]
    store.set_group_name(G1, "family")
    store.set_group_left(G1, True)
    store.set_group_left(G2, False)
    assert store.group(G1) == GroupRow(G1, "family", "private", 10.0, left=True)
    assert store.group(G2) == GroupRow(G2, "work", "pairwise", 5.0, left=False)
    assert store.group(GroupId(b"\x09" * 32)) is None


def test_duplicate_group_raises(store: Store) -> None:
    with pytest.raises(StorageError, match="already stored"):
        store.add_group(GroupRow(G1, "again", "private", 11.0))
    assert store.groups() == [GroupRow(G1, "friends", "private", 10.0)]


def test_updating_an_unknown_group_raises(store: Store) -> None:
    with pytest.raises(StorageError, match="not stored"):
        store.set_group_name(G2, "x")
    with pytest.raises(StorageError, match="not stored"):
        store.set_group_left(G2, True)


# -- events --------------------------------------------------------------------------


def test_events_round_trip_in_insertion_order(store: Store) -> None:
    store.add_group(GroupRow(G2, "work", "private", 11.0))
    rows = [event(3), event(1, text="hello"), event(2, author=BOB), event(4, group=G2)]
    for row in rows:
        assert store.add_event(row) is True
    assert store.events(G1) == rows[:3]
    assert store.events(G2) == [rows[3]]
    assert store.count_events(G1) == 3
    assert store.count_events(GroupId(b"\x09" * 32)) == 0
    assert store.event(eid(1)) == rows[1]
    assert store.event(eid(99)) is None
    assert store.has_event(eid(2)) and not store.has_event(eid(99))
    got = store.event(eid(3))
    assert got is not None and got.kind == Kind.MESSAGE and type(got.kind) is int


def test_set_text(store: Store) -> None:
    store.add_event(event(1))
    store.set_text(eid(1), "decrypted")
    assert store.event(eid(1)) == event(1, text="decrypted")
    store.set_text(eid(1), None)
    assert store.event(eid(1)) == event(1)
    with pytest.raises(StorageError, match="not stored"):
        store.set_text(eid(2), "x")


def test_duplicate_event_id_returns_false_and_keeps_first(store: Store) -> None:
    assert store.add_event(event(1, text="first"))
    again = EventRow(G1, eid(1), BOB, 50, 51, 2, b"other", 5.0, "second")
    assert store.add_event(again) is False
    assert store.events(G1) == [event(1, text="first")]


def test_same_author_and_seq_with_another_id_raises(store: Store) -> None:
    store.add_event(event(1, seq=5))
    with pytest.raises(StorageError) as info:
        store.add_event(event(2, seq=5))
    assert isinstance(info.value, SeqConflictError)
    assert info.value.existing == eid(1)
    assert (info.value.group, info.value.author, info.value.seq) == (G1, ALICE, 5)
    assert store.events(G1) == [event(1, seq=5)]
    # same seq, other author or other group: no conflict
    store.add_group(GroupRow(G2, "work", "private", 11.0))
    assert store.add_event(event(3, seq=5, author=BOB))
    assert store.add_event(event(4, seq=5, group=G2))


def test_add_events_writes_a_batch_in_order_and_skips_known_ids(store: Store) -> None:
    store.add_event(event(2))
    with store.transaction():
        store.add_events([event(1), event(2), event(3, author=BOB), event(4)])
    assert store.events(G1) == [event(2), event(1), event(3, author=BOB), event(4)]
    assert store.position(G1, BOB, 3) == 3  # insertion order: after the one stored before


def test_add_events_with_a_seq_conflict_raises_as_add_event_does(store: Store) -> None:
    store.add_event(event(1, seq=5))
    with store.transaction():
        with pytest.raises(SeqConflictError) as info:
            store.add_events([event(2, seq=1), event(3, seq=5), event(4, seq=6)])
        assert info.value.existing == eid(1)
    # what came before the conflicting row is written, as row by row; the stored one is kept
    assert store.events(G1) == [event(1, seq=5), event(2, seq=1)]


def test_seq_conflict_inside_a_transaction_leaves_it_usable(store: Store) -> None:
    with store.transaction():
        store.add_event(event(1, seq=5))
        with pytest.raises(SeqConflictError):
            store.add_event(event(2, seq=5))
        store.add_equivocation(G1, ALICE, 5, eid(1), b"raw-2", 3.0)
    assert store.events(G1) == [event(1, seq=5)]
    assert store.equivocations(G1) == [(ALICE, 5, eid(1), b"raw-2", 3.0)]


def test_event_of_unknown_group_raises(store: Store) -> None:
    with pytest.raises(StorageError, match="FOREIGN KEY"):
        store.add_event(event(1, group=G2))


def test_integers_beyond_64_bits_are_refused(store: Store) -> None:
    with pytest.raises(StorageError, match="outside"):
        store.add_event(event(1, seq=2**63))
    with pytest.raises(StorageError, match="outside"):
        store.save_own_key(G1, 0, own_key(index=2**63), [])
    with pytest.raises(StorageError, match="outside"):
        store.save_peer_key(G1, BOB, 0, peer_state(index=2**63))
    with pytest.raises(StorageError, match="outside"):
        store.save_peer_key(G1, BOB, 0, peer_state(index=2**64 - 2,
                                                    skipped=((2**63, b"\x01" * 32),)))
    with pytest.raises(StorageError, match="outside"):
        store.save_own_key(G1, 2**63, own_key(), [])
    store.save_own_key(G1, 0, own_key(index=2**63 - 1), [])
    own = store.own_key(G1)
    assert own is not None and own[1].index == 2**63 - 1


# -- pairwise copies -----------------------------------------------------------------


def test_copies_round_trip_and_replace(store: Store) -> None:
    assert store.copy(eid(1), BOB) is None
    store.add_copy(G1, eid(1), BOB, b"for bob")
    store.add_copy(G1, eid(1), CAROL, b"for carol")
    store.add_copy(G1, eid(1), BOB, b"for bob, again")
    assert store.copy(eid(1), BOB) == b"for bob, again"
    assert store.copy(eid(1), CAROL) == b"for carol"
    assert store.copy(eid(2), BOB) is None
    assert store.copies(eid(1)) == {BOB: b"for bob, again", CAROL: b"for carol"}


# -- sender keys ---------------------------------------------------------------------


def test_own_key_round_trip_and_replace(store: Store) -> None:
    assert store.own_key(G1) is None
    store.save_own_key(G1, 1, own_key(0), [BOB, CAROL, BOB])
    assert store.own_key(G1) == (1, own_key(0), frozenset({BOB, CAROL}))
    store.save_own_key(G1, 1, own_key(5), iter([BOB]))
    assert store.own_key(G1) == (1, own_key(5), frozenset({BOB}))
    store.save_own_key(G1, 2, own_key(0), [])
    assert store.own_key(G1) == (2, own_key(0), frozenset())


def test_own_key_recipient_must_be_a_peer_id(store: Store) -> None:
    with pytest.raises(StorageError, match="peer id of 3 bytes"):
        store.save_own_key(G1, 1, own_key(), [PeerId(b"abc")])


def test_peer_keys_round_trip_with_skipped_keys(store: Store) -> None:
    skipped = (*((i, bytes([i]) * 32) for i in range(3, 8)), (2**63 - 2, b"\xff" * 32))
    state = peer_state(index=2**63 - 1, skipped=skipped)
    assert store.peer_keys(G1) == {}
    store.save_peer_key(G1, BOB, 1, peer_state())
    store.save_peer_key(G1, BOB, 2, state)
    store.save_peer_key(G1, CAROL, 1, peer_state(index=1))
    store.save_peer_key(G1, CAROL, 1, peer_state(index=4))  # replaces
    keys = store.peer_keys(G1)
    assert keys == {(BOB, 1): peer_state(), (BOB, 2): state, (CAROL, 1): peer_state(index=4)}
    assert keys[(BOB, 2)].skipped == skipped
    assert store.peer_key(G1, BOB, 2) == state
    assert store.peer_key(G1, BOB, 3) is None


def test_skipped_key_must_be_32_bytes(store: Store) -> None:
    with pytest.raises(StorageError, match="skipped message key of 5 bytes"):
        store.save_peer_key(G1, BOB, 1, peer_state(skipped=((1, b"short"),)))


# -- deliveries and equivocations ----------------------------------------------------


def test_deliveries_round_trip_idempotent(store: Store) -> None:
    assert store.deliveries(G1) == {}
    store.add_delivery(G1, eid(1), BOB, 5.0)
    store.add_delivery(G1, eid(1), CAROL, 6.0)
    store.add_delivery(G1, eid(1), BOB, 9.0)  # already known: the first time is kept
    store.add_delivery(G1, eid(2), BOB, 7.0)
    assert store.deliveries(G1) == {eid(1): {BOB: 5.0, CAROL: 6.0}, eid(2): {BOB: 7.0}}


def test_equivocations_round_trip(store: Store) -> None:
    assert store.equivocations(G1) == []
    assert store.add_equivocation(G1, BOB, 4, eid(1), b"second", 8.0) is True
    assert store.add_equivocation(G1, BOB, 4, eid(1), b"second", 9.0) is False
    assert store.add_equivocation(G1, BOB, 4, eid(1), b"third", 10.0) is True
    assert store.equivocations(G1) == [
        (BOB, 4, eid(1), b"second", 8.0), (BOB, 4, eid(1), b"third", 10.0),
    ]


# -- transactions --------------------------------------------------------------------


class Boom(Exception):
    pass


def test_transaction_commits(store: Store, db_path: Path) -> None:
    with store.transaction():
        store.add_event(event(1))
        store.save_own_key(G1, 1, own_key(), [BOB])
    store.close()
    with Store.open(db_path) as s:
        assert s.events(G1) == [event(1)]
        assert s.own_key(G1) is not None


def test_exception_rolls_back_every_write(store: Store) -> None:
    store.add_event(event(1))
    with pytest.raises(Boom), store.transaction():
        store.add_event(event(2))
        store.set_text(eid(1), "changed")
        store.save_own_key(G1, 1, own_key(), [BOB])
        store.save_peer_key(G1, BOB, 1, peer_state())
        store.add_copy(G1, eid(2), BOB, b"blob")
        store.add_delivery(G1, eid(2), BOB, 1.0)
        store.set_meta("name", "x")
        raise Boom
    assert store.events(G1) == [event(1)]
    assert store.own_key(G1) is None
    assert store.peer_keys(G1) == {}
    assert store.copy(eid(2), BOB) is None
    assert store.deliveries(G1) == {}
    assert store.get_meta("name") is None
    # the store is still usable afterwards
    assert store.add_event(event(2))


def test_base_exception_rolls_back(store: Store) -> None:
    with pytest.raises(KeyboardInterrupt), store.transaction():
        store.add_event(event(1))
        raise KeyboardInterrupt
    assert store.events(G1) == []


def test_nested_transaction_joins_the_outer_one(store: Store, db_path: Path) -> None:
    with store.transaction():
        store.add_event(event(1))
        with store.transaction():
            store.add_event(event(2))
        # the inner block ended, yet nothing is committed: another connection sees nothing
        other = sqlite3.connect(db_path)
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        other.close()
    assert [e.id for e in store.events(G1)] == [eid(1), eid(2)]


def test_exception_through_nested_blocks_rolls_back_all(store: Store) -> None:
    with pytest.raises(Boom), store.transaction():
        store.add_event(event(1))
        with store.transaction():
            store.add_event(event(2))
            raise Boom
    assert store.events(G1) == []


def test_inner_exception_caught_by_outer_undoes_only_inner(store: Store) -> None:
    with store.transaction():
        store.add_event(event(1))
        with pytest.raises(Boom), store.transaction():
            store.add_event(event(2))
            raise Boom
        store.add_event(event(3))
    assert [e.id for e in store.events(G1)] == [eid(1), eid(3)]


# -- kill -9 durability --------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from node.group.events import EventId, GroupId
    from node.ids import PeerId
    from node.store import EventRow, GroupRow, Store

    path, pending = Path(sys.argv[1]), sys.argv[2] == "pending"
    g = GroupId(b"\\x01" * 32)

    def ev(n):
        return EventRow(g, EventId(n.to_bytes(32, "big")), PeerId(b"\\xaa" * 32), n, n, 10,
                        b"raw" * 100, 1.0)

    store = Store.open(path)
    store.add_group(GroupRow(g, "g", "private", 1.0))
    for batch in range(5):
        with store.transaction():
            for n in range(batch * 10, batch * 10 + 10):
                store.add_event(ev(n))
    store.add_event(ev(50))  # outside a transaction: commits by itself
    if pending:
        with store.transaction():
            store.add_event(ev(51))
            store.add_event(ev(52))
            os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("mode", ["committed", "pending"])
def test_kill_9_keeps_committed_events_only(db_path: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db_path), mode], env=env, cwd=REPO,
        capture_output=True, timeout=60, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    # the WAL was not checkpointed: recovery on open must find every committed frame
    assert db_path.with_name(db_path.name + "-wal").stat().st_size > 0
    with Store.open(db_path) as s:
        got = [int.from_bytes(e.id, "big") for e in s.events(G1)]
    assert got == list(range(51))


def test_store_does_not_import_trio() -> None:
    # The store is called synchronously from trio code; it must not depend on trio.
    code = "import sys, node.store; assert 'trio' not in sys.modules, 'trio imported'"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                          capture_output=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()


def test_events_page_streams_in_insertion_order(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "kith.db")
    group = GroupId(bytes(32))
    store.add_group(GroupRow(group, "g", "private", 1.0))
    for i in range(10):
        store.add_event(EventRow(group, EventId(bytes([i]) * 32), PeerId(bytes(32)), i + 1, i + 1,
                                 10, b"raw%d" % i, 1.0))
    seen: list[int] = []
    after = 0
    while page := store.events_page(group, after, limit=3):
        seen += [row.seq for _, row in page]
        after = page[-1][0]
    assert seen == list(range(1, 11))
    store.close()


def test_position_finds_an_authors_event_where_a_sync_session_starts(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "kith.db")
    group = GroupId(bytes(32))
    store.add_group(GroupRow(group, "g", "private", 1.0))
    alice, bob = PeerId(bytes(32)), PeerId(b"\x01" * 32)
    for i in range(6):  # alice 1, bob 1, alice 2, bob 2, ...
        author = (alice, bob)[i % 2]
        store.add_event(EventRow(group, EventId(bytes([i]) * 32), author, i // 2 + 1, i + 1,
                                 10, b"raw%d" % i, 1.0))
    pos = store.position(group, bob, 2)
    assert pos is not None
    page = store.events_page(group, pos - 1, limit=10)
    assert [(row.author, row.seq) for _, row in page] == [(bob, 2), (alice, 3), (bob, 3)]
    assert store.position(group, bob, 4) is None
    assert store.position(GroupId(b"\x02" * 32), bob, 2) is None
    store.close()
