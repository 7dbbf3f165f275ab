"""/file and /save in the chat client: parsing, the attachment line, and a real transfer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.chat.commands import Request, UsageError, interpret
from node.chat.render import file_text, message_lines
from node.chat.session import absolute, progress_text
from tests.chat.helpers import GROUP, message
from tests.chat.test_backend import chat_session, tmp, two_nodes, until  # noqa: F401
from tests.chat.test_commands import make_model


def test_file_and_save_commands() -> None:
    model = make_model()
    send = interpret("/file ~/My Documents/talk slides.pdf", model)
    assert isinstance(send, Request) and send.then == "upload"
    assert send.params == {"group": GROUP, "file": "~/My Documents/talk slides.pdf"}
    quoted = interpret("/file '/tmp/a b.txt'", model)
    assert isinstance(quoted, Request) and quoted.params["file"] == "/tmp/a b.txt"
    with pytest.raises(UsageError, match="usage: /file PATH"):
        interpret("/file", model)
    with pytest.raises(UsageError, match=r"message \[1\] has no file"):
        interpret("/save 1", model)
    model.set_log(GROUP, [message(1, file={"name": "a.pdf", "size": 3, "state": "complete"})])
    save = interpret("/save 1 /tmp/some dir", model)
    assert isinstance(save, Request) and save.then == "save"
    assert save.params == {"group": GROUP, "event": f"{1:064x}", "dir": "/tmp/some dir"}
    save_here = interpret("/save [1]", model)
    assert isinstance(save_here, Request) and save_here.params["dir"] == "."
    assert absolute("x") == os.path.join(os.getcwd(), "x")


def test_the_attachment_line_is_escaped_and_tells_the_state() -> None:
    hostile = {"name": "\x1b]0;pwn\x07.sh", "size": 3 << 20, "state": "fetching",
               "bytes_have": 1 << 20}
    line = file_text(hostile)
    assert "\x1b" not in line and "\x07" not in line
    assert line == "📎 \\x1b]0;pwn\\x07.sh (3.0 MiB) receiving 33%"
    assert "not fetched" in file_text({"name": "x", "size": 1, "state": "too large"})
    model = make_model()
    lines = message_lines(model, message(1, text="", file={"name": "a.pdf", "size": 2048,
                                                           "state": "complete"}))
    assert lines[-1][1].strip() == "📎 a.pdf (2.0 KiB) /save to keep it"
    assert progress_text("sending", "a\nb", 512, 1024) == \
        "sending a\\nb: 50% (512 B of 1.0 KiB)"


async def test_file_then_save_through_the_session(tmp: Path) -> None:  # noqa: F811
    async with two_nodes(tmp) as (alice, bob), chat_session(bob) as (session, _):
        group = alice.create_group("team")
        alice.add(group, bob.peer_id)
        model = session.model
        await until(session, lambda: model.current is not None, "the group")
        source = tmp / "notes.txt"
        source.write_bytes(os.urandom(300_000))
        session.submit(f"/file {source}")
        await until(session, lambda: model.status.startswith("sent notes.txt"), "sent")
        await until(session, lambda: any((e.get("file") or {}).get("state") == "complete"
                                         for e in model.events), "the file on bob's node")
        with trio.fail_after(10):
            g = await alice.group(group)
            files = alice.service.files
            assert files is not None
            await alice.service.wait_until(
                lambda: any(t.state == "complete" and t.group == g.id
                            for t in files.transfers.values()))
        number = model.handle_of(model.events[-1]["id"])
        out = tmp / "saved"
        out.mkdir()
        session.submit(f"/save {number} {out}")
        await until(session, lambda: model.status.startswith("saved "), "saved")
        assert model.status == f"saved {out / 'notes.txt'}"
        assert (out / "notes.txt").read_bytes() == source.read_bytes()
        session.submit(f"/file {tmp / 'missing.bin'}")
        await until(session, lambda: model.status.startswith("/file: cannot read"), "an error")
