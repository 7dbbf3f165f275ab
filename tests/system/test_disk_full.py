"""A full disk pauses a real node; it resumes by itself when space returns (issue 12, item 10).

Bob's data directory is on a small tmpfs of its own. Once he is in a group with
alice, the tmpfs is filled to the last byte and alice sends to him. Bob's node must
stay up and connected, log that it paused, refuse his own ``kith send`` with one
clear line, and show none of the messages it could not store. When the filler file
is removed, bob resumes without help: every message shows up exactly once, in
order, and his acknowledgements reach alice.

Mounting needs root. In CI (``CI=true``) the test runs and fails loudly if it
cannot mount; elsewhere it is skipped when not root.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import pytest

from tests.lab.procs import kith_cli, kith_json
from tests.system.test_groups_cli import create_group, following, running

pytestmark = pytest.mark.system

#: Size of bob's tmpfs: room for his node, not for much more.
TMPFS_SIZE = "8m"
BIG = "x" * 3000  # each message adds pages to bob's WAL
BURST = 5
REFUSAL = "kith: cannot write: disk full; kith will resume when space returns"


def _cannot(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the disk-full test must run in CI, but {what}")
    pytest.skip(what)


@contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    """A tmpfs of ``TMPFS_SIZE`` mounted on ``path`` for the block."""
    if os.geteuid() != 0:
        _cannot("mounting a tmpfs needs root")
    path.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700",
                              "tmpfs", str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        _cannot(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


async def test_a_full_disk_pauses_the_node_and_it_resumes_with_every_message_once(
    tmp: Path,
) -> None:
    with small_tmpfs(tmp / "bobfs") as bob_fs:
        async with AsyncExitStack() as stack:
            alice = await stack.enter_async_context(running(tmp / "alice", "alice"))
            bob = await stack.enter_async_context(running(bob_fs / "bob", "bob", [alice]))
            alice.peer_id = (await kith_json(alice.data, "id"))["peer_id"]
            bob.peer_id = (await kith_json(bob.data, "id"))["peer_id"]
            group = await create_group(alice, "full", "private", [bob])
            bob_log = await stack.enter_async_context(following(bob, group))
            alice_log = await stack.enter_async_context(following(alice, group))
            await bob_log.wait_for_kind("add", 1)

            filler = fill(bob_fs)
            mark = bob.proc.mark()
            sent = await kith_json(alice.data, "send", group, BIG, "--count", str(BURST))
            assert sent["text"] == f"{BIG} #{BURST}"
            await bob.proc.wait_for_line(r"storage paused: .*database or disk is full",
                                         after=mark)
            refused = await kith_cli(bob.data, "send", group, "hello?")
            assert (refused.returncode, refused.stderr.decode().strip()) == (1, REFUSAL)
            alive = await kith_json(bob.data, "id")  # still up, still answering
            assert alive["peer_id"] == bob.peer_id
            assert bob.proc.returncode is None
            assert not [e for e in bob_log.events if e["kind"] == "message"]

            filler.unlink()  # space returns: bob resumes by himself
            await bob.proc.wait_for_line(r"storage writable again after ", after=mark)
            texts = [f"{BIG} #{i}" for i in range(1, BURST + 1)]
            await bob_log.wait_until(
                lambda events: [e["text"] for e in events if e["kind"] == "message"] == texts,
                f"alice's {BURST} messages")
            back = await kith_json(bob.data, "send", group, "back")
            # bob handled his held input before "back": alice has his acks once she has it
            await alice_log.wait_for_ids([back["id"]], "bob's message after resuming")
            log = await kith_json(alice.data, "log", group)
            mine = [e for e in log if e["kind"] == "message" and e["author"] == alice.peer_id]
            assert [e["text"] for e in mine] == texts
            assert all(bob.peer_id in e["delivered_to"] for e in mine), mine
            bob_messages = [e for e in await kith_json(bob.data, "log", group)
                            if e["kind"] == "message"]
            assert [e["text"] for e in bob_messages] == [*texts, "back"]
            assert len({e["id"] for e in bob_messages}) == BURST + 1
            assert not bob.proc.lines_matching(r"(?i)traceback|disconnected from")
