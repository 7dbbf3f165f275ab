"""The ``kith`` command as a new user meets it (issue 15, items 2, 3, 4 and 12).

Real ``kith`` processes on loopback (``tests.system.test_groups_cli.running``);
one-shot commands through ``kith_cli``. Nothing sleeps: a test waits for a node's
log line or a command's exit.
"""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from node.cli.common import width
from tests.lab.procs import WAIT_TIMEOUT, kith_cli, kith_command, kith_env, kith_json, kith_process
from tests.system.test_cli import LOOPBACK, listening_on, one_error_line
from tests.system.test_groups_cli import running, start_mesh

pytestmark = pytest.mark.system


async def ok(data: Path, *args: str) -> str:
    """``kith ARGS``, which must succeed and say nothing on stderr; its stdout."""
    result = await kith_cli(data, *args)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    return result.stdout.decode()


async def fails(data: Path, *args: str) -> str:
    """``kith ARGS``, which must fail with one ``kith:`` line; that line."""
    result = await kith_cli(data, *args)
    assert result.returncode != 0, result.stdout.decode()
    return one_error_line(result.stderr)


async def messages(data: Path, group: str = "lab") -> list[dict[str, object]]:
    return [e for e in await kith_json(data, "log", group) if e["kind"] == "message"]


async def test_options_may_come_after_the_group_and_between_words(tmp: Path) -> None:
    async with running(tmp / "a", "alice") as alice:
        await ok(alice.data, "group", "create", "lab")
        said = await ok(alice.data, "send", "lab", "--count", "2", "hello")
        assert re.fullmatch(r"stored \(no other members yet\): [0-9a-f]{12}\n", said)
        sent = json.loads(await ok(alice.data, "send", "lab", "one", "--json", "two"))
        assert sent["text"] == "one two"
        slides = tmp / "slides.txt"
        slides.write_text("the slides\n")
        await ok(alice.data, "send", "lab", "--file", str(slides), "the", "caption")
        log = await messages(alice.data)
    assert [e["text"] for e in log] == ["hello #1", "hello #2", "one two", "the caption"]
    assert log[-1]["file"]["name"] == "slides.txt"  # type: ignore[index]


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
async def test_a_reader_that_stops_early_gets_no_traceback(
    tmp: Path, json_flag: tuple[str, ...]
) -> None:
    async with running(tmp / "a", "alice") as alice:
        await ok(alice.data, "group", "create", "lab")
        # Far more than a pipe holds (64 KiB), so kith is still writing when head exits.
        await ok(alice.data, "send", "lab", "--count", "12", "x" * 16_000)
        errors = tmp / "stderr"
        with trio.fail_after(WAIT_TIMEOUT):
            result = await trio.run_process(
                ["sh", "-c", '"$@" 2>"$ERRORS" | head -2', "sh",
                 *kith_command(alice.data, "log", "lab", *json_flag)],
                capture_stdout=True, check=False, env=kith_env({"ERRORS": str(errors)}),
            )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2
    assert errors.read_text() == ""


async def test_group_add_takes_a_name_or_a_short_id(tmp: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await start_mesh(stack, tmp, ["alice", "bob"])
        carol = await stack.enter_async_context(running(tmp / "c", "bob", [alice, bob]))
        dave = await stack.enter_async_context(running(tmp / "d", "dave", [alice, bob, carol]))
        for member in (carol, dave):
            member.peer_id = (await kith_json(member.data, "id"))["peer_id"]
        await ok(alice.data, "group", "create", "lab")
        # Two peers called bob: the name is not enough, and the error says which ids.
        line = await fails(alice.data, "group", "add", "lab", "bob")
        assert "could be several peers" in line and bob.short in line and carol.short in line
        assert (await fails(alice.data, "group", "add", "lab", "zed")).startswith(
            "kith: no peer 'zed' known to this node (see `kith peers`)")
        added = await ok(alice.data, "group", "add", "lab", "dave")
        assert added.strip() == "alice added dave as member"
        await ok(alice.data, "group", "add", "lab", bob.short, "--role", "admin")
        await ok(alice.data, "group", "add", "lab", carol.peer_id[:12].upper())
        assert "not a valid peer id" in await fails(alice.data, "group", "add", "lab",
                                                    "a" * 56)
        members = await kith_json(alice.data, "group", "members", "lab")
        await ok(alice.data, "group", "remove", "lab", "dave")
    roles = {m["peer_id"]: m["role"] for m in members}
    assert roles == {alice.peer_id: "owner", bob.peer_id: "admin", carol.peer_id: "member",
                     dave.peer_id: "member"}


async def test_reactions_are_emoji_and_a_number_that_does_not_exist_is_said(
    tmp: Path
) -> None:
    async with running(tmp / "a", "alice") as alice:
        await ok(alice.data, "group", "create", "lab")
        sent = json.loads(await ok(alice.data, "send", "lab", "hello", "--json"))
        short = sent["id"][:8]
        line = await fails(alice.data, "react", "lab", short, "notanemoji")
        assert line == "kith: a reaction is one emoji (like 👍), not 'notanemoji'"
        line = await fails(alice.data, "react", "lab", "[3]", "👍")
        assert line == ("kith: no message [3] in lab: its messages are [1] to [1] "
                        "(see `kith log lab`)")
        await ok(alice.data, "react", "lab", short, "👍🏽")
        [message] = await messages(alice.data)
    assert message["reactions"] == {"👍🏽": ["alice"]}


async def test_every_command_has_a_description_an_example_and_option_help(tmp: Path) -> None:
    commands = [("peers",), ("send",), ("edit",), ("delete",), ("react",), ("pin",),
                ("log",), ("demo",), ("group", "add"), ("group", "notify"), ("run",)]
    for command in commands:
        text = await ok(tmp, *command, "--help")
        _usage, _, rest = text.partition("\n\n")
        description = rest.split("\n\n")[0]
        assert not description.startswith(("positional", "options")), text
        assert re.search(r"^examples?:\n  kith ", text, re.M), text
    async def help_of(*command: str) -> str:
        return " ".join((await ok(tmp, *command, "--help")).split())

    assert "--unpin take the pin off again" in await help_of("pin")
    assert "--mute no notifications for this group" in await help_of("group", "notify")
    assert "guest: reads only" in await help_of("group", "add")
    assert "pairwise, one encryption per recipient" in await help_of("demo")
    assert ("EVENT a message: its number, as `kith log GROUP` and `kith chat` show it"
            in await help_of("react"))
    assert "by this computer's clock and time zone" in await help_of("log")


async def test_a_first_run_on_a_taken_port_leaves_no_identity(tmp: Path) -> None:
    async with kith_process(tmp / "a", "run", *LOOPBACK) as a:
        address = await listening_on(a)
        line = await fails(tmp / "b", "run", "--no-mdns", "--listen", address)
    assert f"cannot listen on {address}" in line
    assert not (tmp / "b" / "identity.key").exists()
    result = await kith_cli(tmp / "b", "id")
    assert "no identity" in one_error_line(result.stderr)


async def test_group_list_columns_line_up_with_emoji_names(tmp: Path) -> None:
    async with running(tmp / "a", "alice") as alice:
        for name in ("lab 🧪", "plain", "家族 🎉"):
            await ok(alice.data, "group", "create", name)
        lines = (await ok(alice.data, "group", "list")).splitlines()
    # Every row's MODE column starts at the same screen column.
    starts = {width(line[:line.index(mode)]) for line in lines[1:]
              for mode in ("private",) if mode in line}
    header = lines[0]
    assert starts == {width(header[:header.index("MODE")])}, lines
