"""``kith chat``'s input, driven in tmux as a person would (issue 15, items 1, 5, 6, 9).

A 20,000-character paste (tmux ``paste-buffer -p``: bracketed, as a terminal
pastes) is taken in at once, the client stays responsive, and Ctrl-C or SIGTERM
right after a paste end it; ``/help`` is a box that Esc closes, at 80x24; the
input line edits like a shell's; ``--name`` on a data directory whose node runs
under another name says so. Every wait is on the captured screen, under a deadline.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

__all__ = ["pytestmark"]

import trio

from tests.system.test_chat_tmux import (
    LOOPBACK,
    Tmux,
    chat_argv,
    kith_run,
    poll_for,
    pytestmark,  # system, and skipped without tmux outside CI
    tmux,
)

PASTE_CHARS = 20_000
#: CPU seconds the client may spend taking in the paste (it took minutes before issue 15).
PASTE_CPU = 5.0


async def start(t: Tmux, name: str, argv: list[str], columns: int = 120, rows: int = 40) -> None:
    await t.start(name, argv)
    if (columns, rows) != (120, 40):
        await t.run("resize-window", "-t", name, "-x", str(columns), "-y", str(rows))


async def client_pid(t: Tmux, name: str) -> int:
    """The chat process: the child of the pane's shell."""
    shell = (await t.run("display-message", "-p", "-t", name, "#{pane_pid}")).strip()

    async def child() -> int | None:
        children = (await trio.Path(f"/proc/{shell}/task/{shell}/children").read_text()).split()
        return int(children[0]) if children else None

    pid = await poll_for(child)
    assert pid is not None
    return pid


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def paste(t: Tmux, name: str, text: str, scratch: Path) -> None:
    """Paste ``text`` into the window as a terminal does (bracketed paste)."""
    await trio.Path(scratch).write_text(text)
    await t.run("load-buffer", "-b", "kith-paste", str(scratch))
    await t.run("paste-buffer", "-p", "-d", "-b", "kith-paste", "-t", name)


async def wait_gone(t: Tmux, name: str, pattern: str) -> None:
    async def gone() -> bool | None:
        return True if re.search(pattern, await t.screen(name)) is None else None

    if await poll_for(gone) is None:
        raise AssertionError(f"{pattern!r} still on screen:\n{await t.screen(name)}")


def big_text(end: str) -> str:
    body = "".join(f"word{i % 97} " for i in range(PASTE_CHARS))[:PASTE_CHARS - len(end)]
    return body + end


@asynccontextmanager
async def alone(tmp: Path, name: str = "alice", columns: int = 120,
                rows: int = 40) -> AsyncIterator[Tmux]:
    """A `kith chat` that runs its own node (no peers), with a group "team" open."""
    async with tmux() as t:
        await start(t, name, chat_argv(tmp / name, *LOOPBACK, "--name", name), columns, rows)
        await t.wait_for_screen(name, rf"kith chat · {name} ")
        await t.type(name, "/create team")
        await t.wait_for_screen(name, r"created group team")
        yield t


async def test_a_20000_character_paste_goes_in_at_once_and_ctrl_c_quits(tmp: Path) -> None:
    async with alone(tmp) as t:
        pid = await client_pid(t, "alice")
        before = cpu_seconds(pid)
        await paste(t, "alice", big_text("END-OF-PASTE-1"), tmp / "paste.txt")
        await t.wait_for_screen("alice", r"END-OF-PASTE-1")  # the end shows in the input line
        assert cpu_seconds(pid) - before < PASTE_CPU
        screen = await t.screen("alice")
        assert "created the group 'team'" in screen  # the input line did not eat the screen
        # Still responsive: Enter says why it cannot go as one message, and keeps the text.
        await t.keys("alice", "Enter")
        await t.wait_for_screen("alice", r"this message is 20,000 characters; one message holds "
                                         r"at most 16,384")
        assert "END-OF-PASTE-1" in await t.screen("alice")
        await t.keys("alice", "C-u")
        await wait_gone(t, "alice", r"END-OF-PASTE-1")
        await t.type("alice", "short and sweet")
        await t.wait_for_screen("alice", r"\[1\] \d\d:\d\d alice: short and sweet")

        # Ctrl-C straight after another paste, while it is still coming in.
        await paste(t, "alice", big_text("END-OF-PASTE-2"), tmp / "paste.txt")
        await t.keys("alice", "C-c")
        await t.wait_for_screen("alice", r"\[exited 0\]")


async def test_sigterm_during_a_paste_ends_the_client(tmp: Path) -> None:
    async with alone(tmp) as t:
        pid = await client_pid(t, "alice")
        await paste(t, "alice", big_text("END-OF-PASTE"), tmp / "paste.txt")
        os.kill(pid, signal.SIGTERM)
        await t.wait_for_screen("alice", r"\[exited 0\]")  # the pane's shell saw it end


async def test_help_is_a_box_esc_closes_at_80x24(tmp: Path) -> None:
    async with alone(tmp, columns=80, rows=24) as t:
        await t.type("alice", "hello there")
        await t.wait_for_screen("alice", r"alice: hello there")
        await t.type("alice", "/help")
        await t.wait_for_screen("alice", r"Help - Esc")
        screen = await t.wait_for_screen("alice", r"/create NAME")
        assert "hello there" not in screen.string  # the box covers the conversation
        await t.keys("alice", "PageDown")
        await t.wait_for_screen("alice", r"/quit")  # scrolled to the end of the list
        await t.keys("alice", "Escape")
        await wait_gone(t, "alice", r"Help - Esc")
        await t.wait_for_screen("alice", r"alice: hello there")
        assert "/create NAME" not in await t.screen("alice")  # not left in the conversation
        await t.type("alice", "/help")
        await t.wait_for_screen("alice", r"Help - Esc")
        await t.keys("alice", "x")  # any key closes it too
        await wait_gone(t, "alice", r"Help - Esc")
        await t.keys("alice", "C-c")
        await t.wait_for_screen("alice", r"\[exited 0\]")


async def test_the_input_line_edits_like_a_shell(tmp: Path) -> None:
    photos = tmp / "photos"
    photos.mkdir()
    (photos / "beach.jpg").write_bytes(b"sand")
    (photos / "berlin.png").write_bytes(b"wall")
    async with alone(tmp) as t:
        await t.type("alice", "hello brave new", enter=False)
        await t.keys("alice", "C-w")
        await t.wait_for_screen("alice", r"\n> hello brave *\n")
        await t.keys("alice", "C-a")
        await t.type("alice", "oh ", enter=False)
        await t.wait_for_screen("alice", r"\n> oh hello brave *\n")
        await t.keys("alice", "C-e")
        await t.type("alice", "world", enter=False)
        await t.wait_for_screen("alice", r"\n> oh hello brave world *\n")
        await t.keys("alice", "C-u")
        await t.wait_for_screen("alice", r"\n> *\n")

        await t.type("alice", "first")
        await t.type("alice", "second")
        await t.wait_for_screen("alice", r"alice: second")
        await t.keys("alice", "Up")
        await t.wait_for_screen("alice", r"\n> second *\n")
        await t.keys("alice", "Up")
        await t.wait_for_screen("alice", r"\n> first *\n")
        await t.keys("alice", "Down")
        await t.wait_for_screen("alice", r"\n> second *\n")
        await t.keys("alice", "Down")
        await t.wait_for_screen("alice", r"\n> *\n")

        await t.type("alice", "/re", enter=False)  # /react /remove /reply
        await t.keys("alice", "Tab")
        await t.wait_for_screen("alice", r"/react  /remove  /reply")
        await t.keys("alice", "Tab")
        await t.wait_for_screen("alice", r"\n> /react *\n")
        await t.keys("alice", "Tab")
        await t.wait_for_screen("alice", r"\n> /remove *\n")
        await t.keys("alice", "C-u")

        await t.type("alice", f"/file {photos}/be", enter=False)
        await t.keys("alice", "Tab")
        await t.wait_for_screen("alice", r"beach\.jpg  .*berlin\.png")
        await t.keys("alice", "Tab")
        await t.wait_for_screen("alice", rf"\n> /file {re.escape(str(photos))}/beach\.jpg *\n")
        await t.keys("alice", "Enter")
        await t.wait_for_screen("alice", r"sent beach\.jpg")
        await t.keys("alice", "C-c")
        await t.wait_for_screen("alice", r"\[exited 0\]")


async def test_name_on_a_running_node_says_it_attaches_as_that_node(tmp: Path) -> None:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(kith_run(tmp / "alice", "alice"))
        t = await stack.enter_async_context(tmux())
        await t.start("chat", chat_argv(tmp / "alice", "--name", "bob"))
        await t.wait_for_screen(
            "chat", rf"a node is already running in {re.escape(str(tmp / 'alice'))} as alice; "
                    r"attaching to it \(--name bob ignored\)")
        await t.wait_for_screen("chat", r"kith chat · alice \(\w{8}\) · node attached")
        await t.keys("chat", "C-c")
        await t.wait_for_screen("chat", r"\[exited 0\]")
