"""``kith chat`` driven in tmux like a person would: keys in, screen captured.

Each test runs a private tmux server (``tmux -L <unique>``, killed at the end)
with a 120x40 window per chat client. Keys go in with ``send-keys``; the test
reads the screen with ``capture-pane -p`` and waits for text by polling it
until a deadline (``wait_for_screen``), never by sleeping a fixed time. The
other side of the conversation is a ``kith run`` process driven by the CLI
(``kith send``, ``kith log``), or a second ``kith chat``.

Both ways the client finds its node are covered: ``kith chat`` starting the
node in its own process (no node running), and ``kith chat`` attaching to a
``kith run`` already running on the data directory.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from tests.lab.procs import Proc, kith_cli, kith_json, kith_process

pytestmark = [
    pytest.mark.system,
    # Outside CI a machine without tmux skips; in CI (scripts/test installs it) it must run.
    pytest.mark.skipif(shutil.which("tmux") is None and os.environ.get("CI") != "true",
                       reason="tmux is not installed"),
]

LISTENING = r"node (?P<short>[a-z2-7]{8}) \((?P<name>[^)]*)\) listening on (?P<address>\S+)$"
LOOPBACK = ("--listen", "127.0.0.1:0", "--no-mdns")
#: Seconds to wait for something to show on screen (nodes share 2 CPUs with other tests).
SCREEN_TIMEOUT = 20.0
#: Seconds between two captures while waiting.
POLL = 0.1
#: Seconds within which a message ends its author's typing mark (a notice lasts 6).
TYPING_GONE = 3.0
T = TypeVar("T")
EVIL = "\x1b[2J\x1b]0;pwned\x07 evil"


class Tmux:
    """A private tmux server; one window (session) per chat client."""

    def __init__(self) -> None:
        self.server = f"kith-test-{secrets.token_hex(4)}"

    async def run(self, *args: str) -> str:
        result = await trio.run_process(["tmux", "-L", self.server, "-f", "/dev/null", *args],
                                        capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {result.stderr.decode()}")
        return str(result.stdout.decode("utf-8", errors="replace"))

    async def start(self, name: str, argv: list[str]) -> None:
        # The pane keeps showing the client's last words after it exits.
        shell = (f"env -u KITH_DATA LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=xterm-256color "
                 f"{shlex.join(argv)}; echo \"[exited $?]\"; sleep 600")
        await self.run("new-session", "-d", "-s", name, "-x", "120", "-y", "40", shell)

    async def keys(self, name: str, *keys: str) -> None:
        await self.run("send-keys", "-t", name, *keys)

    async def type(self, name: str, text: str, *, enter: bool = True) -> None:
        await self.run("send-keys", "-t", name, "-l", text)
        if enter:
            await self.keys(name, "Enter")

    async def screen(self, name: str) -> str:
        return await self.run("capture-pane", "-p", "-t", name)

    async def wait_for_screen(
        self, name: str, pattern: str, seconds: float = SCREEN_TIMEOUT
    ) -> re.Match[str]:
        """Poll the screen until ``pattern`` matches it; fail with the screen if it does not."""
        regex = re.compile(pattern)
        text = ""

        async def probe() -> re.Match[str] | None:
            nonlocal text
            text = await self.screen(name)
            return regex.search(text)

        match = await poll_for(probe, seconds)
        if match is None:
            raise AssertionError(f"{name}: {pattern!r} not on screen within {seconds:g} s:\n{text}")
        return match

    async def kill(self) -> None:
        """Kill the server and remove its socket file (tmux leaves it behind)."""
        try:
            socket_path = (await self.run("display-message", "-p", "#{socket_path}")).strip()
        except AssertionError:
            socket_path = ""  # no server was started
        await trio.run_process(["tmux", "-L", self.server, "kill-server"], check=False,
                               capture_stdout=True, capture_stderr=True)
        if socket_path:
            await trio.Path(socket_path).unlink(missing_ok=True)


@asynccontextmanager
async def tmux() -> AsyncIterator[Tmux]:
    t = Tmux()
    try:
        yield t
    finally:
        with trio.CancelScope(shield=True):
            await t.kill()


def chat_argv(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "node", "--data", str(data), "chat", *args]


async def until_cli(data: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``kith ARGS`` until it succeeds (say, the group has reached this node)."""
    last: subprocess.CompletedProcess[bytes] | None = None

    async def probe() -> subprocess.CompletedProcess[bytes] | None:
        nonlocal last
        last = await kith_cli(data, *args)
        return last if last.returncode == 0 else None

    result = await poll_for(probe)
    if result is None:
        assert last is not None
        raise AssertionError(f"kith {' '.join(args)} kept failing: {last.stderr.decode()}")
    return result


@asynccontextmanager
async def kith_run(data: Path, name: str) -> AsyncIterator[tuple[Proc, str]]:
    async with kith_process(data, "run", *LOOPBACK, "--name", name) as proc:
        listening = await proc.wait_for_line(LISTENING)
        yield proc, listening["address"]


async def bell(t: Tmux, name: str) -> str:
    """"1" once the client in window ``name`` rang the terminal bell."""
    return (await t.run("display-message", "-p", "-t", name, "#{window_bell_flag}")).strip()


async def poll_for(probe: Callable[[], Awaitable[T | None]],
                   seconds: float = SCREEN_TIMEOUT) -> T | None:
    """``probe()`` every ``POLL`` s until it returns something, for at most ``seconds``.

    The chats and nodes are other processes that signal nothing: their screens and
    their answers to the CLI can only be looked at again, under a deadline.
    """
    with trio.move_on_after(seconds):
        while True:
            found = await probe()
            if found is not None:
                return found
            await trio.sleep(POLL)
    return None


async def poll(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Until ``check()`` holds (at most ``SCREEN_TIMEOUT`` s)."""
    async def probe() -> bool | None:
        return True if await check() else None

    if await poll_for(probe) is None:
        raise AssertionError(f"no {what} within {SCREEN_TIMEOUT:g} s")


async def wait_for_bell(t: Tmux, name: str) -> None:
    async def rang() -> bool:
        return await bell(t, name) == "1"

    await poll(rang, f"bell in {name}'s chat")


def handle(match: re.Match[str]) -> str:
    return match.group("n")


async def log_json(data: Path, group: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await kith_json(data, "log", group)
    return events


# -- the whole session ---------------------------------------------------------------


async def test_a_whole_conversation_with_the_node_in_process(tmp: Path) -> None:
    """Alice's `kith chat` runs her node; Bob is a `kith run` driven with the CLI."""
    async with AsyncExitStack() as stack:
        _bob_proc, bob_address = await stack.enter_async_context(kith_run(tmp / "bob", "bob"))
        t = await stack.enter_async_context(tmux())
        await t.start("alice", chat_argv(tmp / "alice", *LOOPBACK, "--name", "alice",
                                         "--peer", bob_address))
        await t.wait_for_screen("alice", r"kith chat · alice \(\w{8}\) · node in this process")
        await t.wait_for_screen("alice", r"No groups yet")

        # /peers until Bob's node is connected (the chat's node dials it)
        async def bob_online() -> bool:
            await t.type("alice", "/peers")
            await t.wait_for_screen("alice", r"Peers this node knows")
            return re.search(r"bob\s+online", await t.screen("alice")) is not None

        await poll(bob_online, "bob online in /peers")

        await t.type("alice", "/create team")
        await t.wait_for_screen("alice", r"> team")
        await t.wait_for_screen("alice", r"alice created the group 'team'")

        await t.type("alice", "/add bo", enter=False)
        await t.keys("alice", "Tab")
        await t.wait_for_screen("alice", r"\n> /add bob *\n")
        await t.keys("alice", "Enter")
        await t.wait_for_screen("alice", r"alice added bob as member")
        await t.wait_for_screen("alice", r"● bob")

        await t.type("alice", "hello bob")
        await t.wait_for_screen("alice", r"\[(?P<n>\d+)\] \d\d:\d\d alice: hello bob")

        # Bob reads (plain `kith log` counts as reading): Alice sees the read mark.
        read = await until_cli(tmp / "bob", "log", "team")
        assert "alice: hello bob" in read.stdout.decode()
        await t.wait_for_screen("alice", r"alice: hello bob \[read by bob\]")

        # Bob writes, including terminal escape sequences: shown escaped, never run.
        sent = await kith_cli(tmp / "bob", "send", "team", "hi alice")
        assert sent.returncode == 0, sent.stderr.decode()
        hi = await t.wait_for_screen("alice", r"\[(?P<n>\d+)\] \d\d:\d\d bob: hi alice")
        sent = await kith_cli(tmp / "bob", "send", "team", EVIL)
        assert sent.returncode == 0, sent.stderr.decode()
        evil = await t.wait_for_screen(
            "alice", r"\[(?P<n>\d+)\] \d\d:\d\d bob: \\x1b\[2J\\x1b\]0;pwned\\x07 evil")
        screen = await t.screen("alice")
        assert "alice: hello bob" in screen  # the screen was not cleared
        assert "\x1b" not in screen

        hello = await t.wait_for_screen("alice", r"\[(?P<n>\d+)\] \d\d:\d\d alice: hello bob")
        await _reply_react_edit(t, tmp / "bob", handle(hi), handle(hello))
        await _delete_evil(t, handle(evil))

        # The [N] chat shows is the node's number: the CLI takes it too, and it names the
        # same message in `kith log` (which reaches the chat's node through its socket).
        numbers = {e["text"]: e.get("number") for e in await log_json(tmp / "alice", "team")}
        assert numbers["hello again"] == int(handle(hello))
        reacted = await kith_cli(tmp / "alice", "react", "team", f"[{handle(hello)}]", "🎉")
        assert reacted.returncode == 0, reacted.stderr.decode()
        await t.wait_for_screen("alice", r"🎉 alice")

        await t.keys("alice", "C-c")
        await t.wait_for_screen("alice", r"\[exited 0\]")


async def _reply_react_edit(t: Tmux, bob: Path, hi: str, hello: str) -> None:
    """The message features of issue 6 part 2, through the chat's commands."""
    await t.type("alice", f"/reply {hi} sure, see you")
    await t.wait_for_screen("alice", r"┌ bob: hi alice.*\n.*alice: sure, see you")
    events = await log_json(bob, "team")
    reply = next(e for e in events if e.get("text") == "sure, see you")
    assert reply["reply_to"] is not None

    await t.type("alice", f"/react {hi} 👍")
    await t.wait_for_screen("alice", r"👍 alice")

    await t.type("alice", f"/edit {hello} hello again")
    await t.wait_for_screen("alice", r"alice: hello again \(edited\)")
    async def edited() -> bool:
        return any(e.get("text") == "hello again" and e.get("edited")
                   for e in await log_json(bob, "team"))

    await poll(edited, "edit on Bob's node")

    await t.type("alice", f"/pin {hi}")
    await t.wait_for_screen("alice", rf"\[{hi}\] \d\d:\d\d bob: hi alice \[pinned\]")


async def _delete_evil(t: Tmux, evil: str) -> None:
    await t.type("alice", f"/delete {evil}")  # the owner may delete anyone's message
    await t.wait_for_screen("alice", rf"\[{evil}\] \d\d:\d\d bob: \(message deleted by alice\)")
    assert "pwned" not in await t.screen("alice")


async def test_attach_to_a_running_node_and_chat_with_a_second_client(tmp: Path) -> None:
    """Alice's `kith chat` attaches to her `kith run`; Bob uses `kith chat` too."""
    async with AsyncExitStack() as stack:
        _alice_proc, alice_address = await stack.enter_async_context(
            kith_run(tmp / "alice", "alice"))
        t = await stack.enter_async_context(tmux())
        await t.start("alice", chat_argv(tmp / "alice"))
        await t.start("bob", chat_argv(tmp / "bob", *LOOPBACK, "--name", "bob",
                                       "--peer", alice_address))
        await t.wait_for_screen("alice", r"kith chat · alice \(\w{8}\) · node attached")
        await t.wait_for_screen("bob", r"kith chat · bob \(\w{8}\) · node in this process")
        bob_id = (await kith_json(tmp / "bob", "id"))["peer_id"]

        # The CLI works alongside the attached client: create the group there.
        created = await kith_cli(tmp / "alice", "group", "create", "lab")
        assert created.returncode == 0, created.stderr.decode()
        await t.wait_for_screen("alice", r"> lab")
        await t.type("alice", f"/add {bob_id}")
        await t.wait_for_screen("alice", r"alice added bob as member")

        await t.type("alice", "/mute")  # no notifications from lab for Alice, but mentions
        await t.wait_for_screen("alice", r"notifications off for this group")
        await t.wait_for_screen("alice", r"> lab \[muted\]")

        await t.wait_for_screen("bob", r"> lab")  # the group reached Bob's client
        await t.type("bob", "still typ", enter=False)
        await t.wait_for_screen("alice", r"bob is typing…")
        await t.type("bob", "ing: hi from bob's chat")
        await t.wait_for_screen("alice", r"bob: still typing: hi from bob's chat")
        # His message ends his typing mark at once (issue 15, item 7), in the conversation
        # and in the members pane: well before the TYPING_SHOWN seconds a notice lasts.
        async def typing_gone() -> bool | None:
            return True if "typing…" not in await t.screen("alice") else None

        assert await poll_for(typing_gone, TYPING_GONE) is not None, await t.screen("alice")
        assert await bell(t, "alice") == "0"  # muted
        await t.type("bob", "@al", enter=False)
        await t.keys("bob", "Tab")  # completes the mention
        await t.type("bob", "look here")
        await t.wait_for_screen("alice", r"bob: @alice look here")
        await wait_for_bell(t, "alice")  # a mention rings even in a muted group
        assert await bell(t, "bob") == "0"  # your own messages never ring

        await t.type("alice", "hi bob")
        await t.wait_for_screen("bob", r"alice: hi bob")
        await wait_for_bell(t, "bob")
        # Bob's client shows the group, so it has read it: Alice's client says so.
        await t.wait_for_screen("alice", r"alice: hi bob \[read by bob\]")

        await t.keys("alice", "C-c")
        await t.wait_for_screen("alice", r"\[exited 0\]")
        # Quitting an attached client leaves the node running.
        assert (await kith_json(tmp / "alice", "id"))["running"] is True
        await t.type("bob", "/quit")
        await t.wait_for_screen("bob", r"\[exited 0\]")
