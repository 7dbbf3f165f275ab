"""``kith files``: the space attachments take, pruning it, and orphans swept at start.

Real processes through the ``kith`` command; log lines (never sleeps) say when
something happened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.lab.procs import kith_cli, kith_json, kith_process
from tests.system.test_cli import LOOPBACK, listening_on

pytestmark = pytest.mark.system

MiB = 1024 * 1024


def chunk_files(data: Path) -> list[Path]:
    return [p for p in (data / "chunks").rglob("*") if p.is_file()]


async def test_files_shows_usage_prune_frees_it_and_orphans_go_at_start(tmp: Path) -> None:
    data = tmp / "a"
    source = tmp / "notes.bin"
    source.write_bytes(os.urandom(MiB + 1))
    async with kith_process(data, "run", *LOOPBACK, "--name", "alice") as node:
        await listening_on(node)
        assert (await kith_cli(data, "files")).stdout.decode().startswith(
            "no attachments stored")
        await kith_json(data, "group", "create", "lab")
        sent = await kith_json(data, "send", "--file", str(source), "lab")
        usage = await kith_json(data, "files")
        assert usage["total"]["files"] == 1 and usage["total"]["bytes"] > MiB
        assert [(g["name"], g["files"]) for g in usage["groups"]] == [("lab", 1)]
        shown = (await kith_cli(data, "files")).stdout.decode()
        assert "lab" in shown and "total" in shown and "kith files prune" in shown
        listed = await kith_json(data, "files", "--group", "lab")
        assert [(f["id"], f["name"], f["state"]) for f in listed["files"]] == [
            (sent["id"], "notes.bin", "complete")]

        # A dry run removes nothing; a prune of files older than 30 days finds none.
        dry = await kith_json(data, "files", "prune", "--older-than", "0", "--dry-run")
        assert len(dry["files"]) == 1 and dry["bytes"] > MiB and chunk_files(data)
        kept = await kith_cli(data, "files", "prune", "--older-than", "30")
        assert kept.stdout.decode().startswith("no files older than 30 day(s)")
        pruned = await kith_cli(data, "files", "prune", "--older-than", "0")
        assert pruned.returncode == 0
        assert pruned.stdout.decode().startswith("freed 1.0 MiB: 1 file(s)"), pruned.stdout
        assert chunk_files(data) == []
        assert (await kith_json(data, "files"))["total"] == {"files": 0, "bytes": 0}
        listed = await kith_json(data, "files", "--group", "lab")
        assert [f["state"] for f in listed["files"]] == ["pruned"]

    # Left by a crash: a chunk no message names, and half a chunk.
    stray = data / "chunks" / "ab" / ("ab" + "0" * 62)
    stray.parent.mkdir(mode=0o700, exist_ok=True)
    stray.write_bytes(b"x" * 1000)
    stray.with_name(stray.name + ".tmp").write_bytes(b"y" * 24)
    async with kith_process(data, "run", *LOOPBACK, "--name", "alice") as node:
        await node.wait_for_line(
            r"removed 2 orphaned attachment chunk\(s\) at start, freed 1.0 KiB")
        await listening_on(node)
        assert chunk_files(data) == []
        # Pruned stays pruned after a restart: the node does not fetch it back by itself.
        listed = await kith_json(data, "files", "--group", "lab")
        assert [f["state"] for f in listed["files"]] == ["pruned"]
    assert stat.S_IMODE((data / "profile.json").stat().st_mode) == 0o600
