"""Attachments across real nodes over loopback TCP: sizes, relays, corruption, caps, floods."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from node import Kith
from node.errors import KithError
from node.files.attachment import CHUNK_SIZE
from node.group.events import EventId
from tests.integration.test_groups import SOON, founded, mesh

MiB = 1024 * 1024


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def complete(node: Kith, group: str, event: str, timeout: float = SOON) -> dict[str, Any]:
    """Wait until ``node`` holds the whole file of ``event``; its status."""
    with trio.fail_after(timeout):
        g = await node.group(group)
        await node.service.wait_until(lambda: g.core.get(EventId(bytes.fromhex(event)))
                                      is not None)
        files = node.service.files
        assert files is not None
        await node.service.wait_until(
            lambda: (t := files.transfers.get(EventId(bytes.fromhex(event)))) is not None
            and t.state == "complete")
    return node.file_status(group, event)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1])
async def test_small_files_arrive_whole(tmp_path: Path, size: int) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        source = make_file(tmp_path / "notes.bin", size)
        sent = await alice.send_file(group, source, "here you go")
        assert sent["file"]["state"] == "complete" and sent["text"] == "here you go"
        status = await complete(bob, group, sent["id"])
        assert (status["name"], status["size"], status["have"]) == (
            "notes.bin", size, -(-size // CHUNK_SIZE))
        out = tmp_path / "out"
        out.mkdir()
        saved = await bob.save_file(group, sent["id"], out)
        assert saved == out / "notes.bin" and saved.read_bytes() == source.read_bytes()
        again = await bob.save_file(group, sent["id"], out)  # never overwrites
        assert again == out / "notes (1).bin" and again.read_bytes() == source.read_bytes()
