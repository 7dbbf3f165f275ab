"""Reclaiming attachment space across real nodes: prune, stay pruned, fetch again on save."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import trio

from node.api.python import open_node
from node.errors import KithError
from node.files.attachment import CHUNK_SIZE
from node.group.events import EventId
from tests.integration.test_attachments import complete, files_of, make_file
from tests.integration.test_groups import SOON, founded


def chunk_files(data: Path) -> list[Path]:
    return [p for p in (data / "chunks").rglob("*") if p.is_file()]


async def test_a_pruned_file_stays_pruned_until_saved_then_comes_back(tmp_path: Path) -> None:
    source = make_file(tmp_path / "slides.pdf", 2 * CHUNK_SIZE + 5)
    out = tmp_path / "out"
    out.mkdir()
    async with (open_node(tmp_path / "alice", name="alice") as alice,
                open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob):
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
        group = await founded([alice, bob], "private")
        sent = await alice.send_file(group, source)
        await complete(bob, group, sent["id"])
        event = EventId(bytes.fromhex(sent["id"]))
        files = files_of(bob)
        usage = files.usage()
        total = files.total(usage)
        assert total.files == 1 and total.size > 2 * CHUNK_SIZE
        # Nothing is older than an hour; everything is older than a moment from now.
        now = time.time()
        assert files.prune(now - 3600, now) == ([], 0)
        pruned, freed = files.prune(now + 1, now)
        assert [t.event for t in pruned] == [event] and freed == total.size
        assert chunk_files(tmp_path / "bob") == []
        assert bob.file_status(group, sent["id"])["state"] == "pruned"
        assert bob.service.store.chunks() == []
        assert len(chunk_files(tmp_path / "alice")) == 3  # the author's copy is untouched
    # After a restart, with alice there, bob does not fetch the file back by itself...
    async with (open_node(tmp_path / "alice", name="alice") as alice,
                open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob):
        with trio.fail_after(SOON):
            await bob.wait_for_peer(alice.peer_id)
        assert bob.file_status(group, sent["id"])["state"] == "pruned"
        # ...until someone saves it: then it is fetched again and saved.
        with pytest.raises(KithError, match="removed from this node to free space"):
            await bob.save_file(group, sent["id"], out)
        await complete(bob, group, sent["id"])
        saved = await bob.save_file(group, sent["id"], out)
        assert saved.read_bytes() == source.read_bytes()
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # not readable by others
        assert bob.service.store.pruned() == set()


async def test_chunks_shared_by_a_kept_file_survive_a_prune(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        group = alice.create_group("lab")
        source = make_file(tmp_path / "a.bin", CHUNK_SIZE)
        first = await alice.send_file(group, source)
        files = files_of(alice)
        # Both messages name the same chunks (as a re-sent file's copies could); only the
        # first is old enough to prune.
        g = await alice.group(group)
        second = await alice.send_file(group, source)
        ids = [EventId(bytes.fromhex(e["id"])) for e in (first, second)]
        g.joined_at[ids[0]] -= 10 * 86400
        shared = set(files.transfers[ids[0]].ref.chunks)
        files.transfers[ids[1]].ref = files.transfers[ids[0]].ref  # same addresses
        for index, address in enumerate(files.transfers[ids[1]].ref.chunks):
            files._by_address.setdefault(address, set()).add((ids[1], index))
        now = time.time()
        pruned, freed = files.prune(now - 86400, now)
        assert [t.event for t in pruned] == [ids[0]] and freed == 0
        assert all(files.chunks.has(a) for a in shared)
