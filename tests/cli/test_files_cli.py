"""``kith send --file`` and ``kith save`` against running in-process nodes (control socket)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import trio

from node.api.python import Kith
from node.cli.files import Progress, describe
from node.cli.main import build_parser, main
from node.files.attachment import CHUNK_SIZE, encrypt_bytes
from node.group.content import Post
from tests.integration.test_attachments import complete
from tests.integration.test_groups import founded, mesh


def kith(node: Kith, *argv: str) -> tuple[int, str, str]:
    """Run ``kith --data DIR ARGV`` in this process (a worker thread); code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--data", str(node.app.data_dir.path), *argv])
    return code, out.getvalue(), err.getvalue()


async def run(node: Kith, *argv: str) -> tuple[int, str, str]:
    return await trio.to_thread.run_sync(lambda: kith(node, *argv))


async def test_send_file_and_save_with_a_hostile_name(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        source = tmp_path / "slides.pdf"
        source.write_bytes(os.urandom(CHUNK_SIZE + 100))
        code, out, err = await run(alice, "send", "lab", "the", "slides", "--file", str(source))
        assert code == 0, err
        assert out.startswith(("sent: ", "delivered: ")) and "slides.pdf (256.1 KiB)" in out
        assert err == ""  # not a terminal: no progress bar, only the final line
        [event] = [e for e in alice.log(group) if e.get("file")]
        assert event["text"] == "the slides"

        # A member's node names its file "../../evil\x1b[2J\n.sh" (not a name a disk
        # would give it, but the name is whatever the message says).
        files = alice.service.files
        assert files is not None
        ref, chunks = encrypt_bytes(bytes(32), b"#!/bin/sh\necho gotcha\n")
        for address, chunk in zip(ref.chunks, chunks, strict=True):
            files.chunks.put(address, chunk)
        hostile = ref.__class__("../../evil\x1b[2J\n.sh", ref.size, ref.key, ref.chunks)
        posted = alice.service.post(alice.service.find(group), Post("", file=hostile))
        await complete(bob, group, posted.id.hex())
        code, out, _ = await run(bob, "log", "lab")
        assert "[file] ../../evil\\x1b[2J\\x0a.sh (22 B)" in out and "\x1b" not in out
        target = tmp_path / "downloads"
        target.mkdir()
        for expected in ("_.._evil_[2J_.sh", "_.._evil_[2J_ (1).sh"):
            code, out, err = await run(bob, "save", "lab", posted.id.hex()[:10], str(target))
            assert code == 0, err
            assert out.strip() == f"saved {target / expected} (22 B)"
        assert sorted(p.name for p in target.iterdir()) == ["_.._evil_[2J_ (1).sh",
                                                            "_.._evil_[2J_.sh"]
        assert (target / "_.._evil_[2J_.sh").read_bytes() == b"#!/bin/sh\necho gotcha\n"
        assert not [n for n in os.listdir(tmp_path) if "evil" in n or n.endswith(".sh")]

        code, _, err = await run(bob, "save", "lab", event["id"][:10], str(tmp_path / "nope"))
        assert code == 1 and "is not a directory" in err
        code, _, err = await run(alice, "send", "lab", "--file", str(tmp_path / "missing"))
        assert code == 1 and "cannot read" in err and "missing" in err
        code, _, err = await run(alice, "send", "lab")
        assert code == 1 and "nothing to send" in err


def test_parsing() -> None:
    parser = build_parser()
    args = parser.parse_args(["send", "lab", "--file", "x.pdf"])
    assert (args.file, args.text) == ("x.pdf", [])
    args = parser.parse_args(["save", "lab", "1a2b3c4d"])
    assert (args.dir, args.no_wait) == (".", False)
    assert parser.parse_args(["run", "--max-file-size", "2.5"]).max_file_size == 5 * 2**19
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--max-file-size", "300"])


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    Progress("x", quiet).update(1, 2)
    assert quiet.getvalue() == ""
    tty = _Tty()
    bar = Progress("sending a", tty)
    bar.update(512 * 1024, 1024 * 1024)
    bar.end()
    assert "[###############---------------]  50% 512.0 KiB/1.0 MiB" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[K")


def test_describe() -> None:
    file = {"name": "a\x1b.txt", "size": 2048, "state": "fetching", "have": 1, "chunks": 3}
    assert describe(file) == "[file] a\\x1b.txt (2.0 KiB)  receiving 1/3"
