"""Message numbers through the real ``kith`` command (issue 15: the ``[N]`` chat shows
were per chat session, so the commands could not take them).

A message's number is its place among the group's messages in this node's storage
order (node.api.numbers): the same in ``kith log``, ``--json``, ``kith chat``, with the
node running or stopped. Every command that takes an EVENT takes ``N`` or ``[N]``.
Also here: a message queued while the node was stopped carries the time of
``kith send``, not the node's start. Nothing sleeps: tests wait for log lines.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from node.group.events import Kind
from tests.lab.procs import kith_cli, kith_json
from tests.system.test_cli_usability import fails, messages, ok
from tests.system.test_groups_cli import following, running, start_mesh

pytestmark = pytest.mark.system

#: A message line of plain ``kith log``: time, [N], id prefix, author: text.
LINE = re.compile(r"^\d\d:\d\d:\d\d +\[(\d+)\] ([0-9a-f]{8}) (\w+): (.*?)(  \(.*)?$")


def numbers_shown(log: str) -> dict[str, int]:
    """``{id prefix: number}`` of the message lines of plain ``kith log``."""
    return {m[2]: int(m[1]) for line in log.splitlines() if (m := LINE.match(line))}


def stored_order(data: Path, group: str) -> list[str]:
    """The ids of the group's MESSAGE events in the node's storage order (``pos``)."""
    db = sqlite3.connect(data / "kith.db")
    try:
        rows = db.execute("SELECT id FROM events WHERE group_id = ? AND kind = ? ORDER BY pos",
                          (bytes.fromhex(group), int(Kind.MESSAGE))).fetchall()
    finally:
        db.close()
    return [bytes(r[0]).hex() for r in rows]


async def test_every_event_command_takes_the_number_kith_log_shows(tmp: Path) -> None:
    picture = tmp / "picture.bin"
    picture.write_bytes(bytes(range(256)) * 40)
    async with running(tmp / "a", "alice") as alice:
        lab = (await kith_json(alice.data, "group", "create", "lab"))["id"]
        await ok(alice.data, "send", "lab", "hello")
        await ok(alice.data, "send", "lab", "second")
        await ok(alice.data, "send", "lab", "--file", str(picture), "the picture")
        sent = await messages(alice.data)
        assert [m["number"] for m in sent] == [1, 2, 3]
        assert numbers_shown(await ok(alice.data, "log", "lab")) == {
            str(m["id"])[:8]: m["number"] for m in sent}
        ids = {m["number"]: m["id"] for m in sent}

        await ok(alice.data, "react", "lab", "1", "👍")  # [4]: a reaction takes a number
        await ok(alice.data, "react", "lab", "[1]", "🎉")  # [5]
        await ok(alice.data, "edit", "lab", "[2]", "second,", "edited")  # [6]
        reply = json.loads(await ok(alice.data, "send", "lab", "--reply", "2", "a", "reply",
                                    "--json"))
        assert (reply["number"], reply["reply_to"]) == (7, ids[2])
        await ok(alice.data, "pin", "lab", "2")
        saved = json.loads(await ok(alice.data, "save", "lab", "[3]", str(tmp), "--json"))
        assert await trio.Path(saved["path"]).read_bytes() == picture.read_bytes()
        await ok(alice.data, "delete", "lab", "7")
        await ok(alice.data, "edit", "lab", ids[1][:8], "by", "id")  # ids still work

        assert await fails(alice.data, "react", "lab", "99", "👍") == (
            "kith: no message [99] in lab: its messages are [1] to [8] (see `kith log lab`)")
        assert await fails(alice.data, "edit", "lab", "[0]", "x") == (
            "kith: no message [0] in lab: its messages are [1] to [8] (see `kith log lab`)")
        assert await fails(alice.data, "pin", "lab", "4") == (
            "kith: [4] in lab is a reaction to [1], not a message")
        assert "not 'two'" in await fails(alice.data, "delete", "lab", "two")

        log = await messages(alice.data)
        shown = {m["number"]: m for m in log}
        assert shown[1]["text"] == "by id" and shown[1]["reactions"] == {
            "👍": ["alice"], "🎉": ["alice"]}
        assert shown[2]["text"] == "second, edited" and shown[2]["pinned"]
        assert shown[7]["deleted"]
        assert sorted(shown) == [1, 2, 3, 7]  # 4, 5, 6 and 8 are reactions and edits
        plain = await ok(alice.data, "log", "lab", "--all")
        assert re.search(r"\[4\] [0-9a-f]{8} \* alice reacted 👍 on \[1\]$", plain, re.M)
    # Stopped: the same numbers, and they are the storage order of the group's messages.
    assert [(m["id"], m["number"]) for m in await messages(alice.data)] == [
        (m["id"], m["number"]) for m in log]
    order = stored_order(alice.data, lab)
    assert [order.index(str(m["id"])) + 1 for m in log] == [m["number"] for m in log]
    queued = json.loads(await ok(alice.data, "send", "lab", "--reply", "[2]", "later",
                                 "--json"))
    assert queued["reply_to"] == ids[2]
    assert (await kith_cli(alice.data, "react", "lab", "1", "👍")).returncode == 3


def by_text(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(e["text"]): e for e in events}


async def test_numbers_are_this_nodes_storage_order_and_queued_time_is_send_time(
    tmp: Path
) -> None:
    """bob queues a message while stopped, alice writes two meanwhile. Each node numbers
    the messages as it stored them: bob stores his first (at his start, before he
    connects), alice stores it last. The group order is one and the same on both."""
    async with AsyncExitStack() as stack:
        alice, bob = await start_mesh(stack, tmp, ["alice", "bob"])
        await ok(alice.data, "group", "create", "lab")
        await ok(alice.data, "group", "add", "lab", "bob")
        await bob.proc.wait_for_line(rf"added to group lab by {alice.short}")
        await ok(alice.data, "send", "lab", "first")
        async with following(bob, "lab") as follow:
            await follow.wait_until(lambda es: any(e.get("text") == "first" for e in es),
                                    "bob to have 'first'")
        assert await bob.proc.stop() == 0
        before = time.time()
        assert (await ok(bob.data, "send", "lab", "queued", "by", "bob")).startswith(
            "node not running: queued")
        after = time.time()
        await ok(alice.data, "send", "lab", "while")
        await ok(alice.data, "send", "lab", "away")
        again = await stack.enter_async_context(running(bob.data, "bob", [alice]))
        async with following(alice, "lab") as follow:
            await follow.wait_until(
                lambda es: any(e.get("text") == "queued by bob" for e in es),
                "alice to have bob's queued message")
        async with following(again, "lab") as follow:
            await follow.wait_until(lambda es: any(e.get("text") == "away" for e in es),
                                    "bob to have 'away'")
        at_alice = await messages(alice.data)
        at_bob = await messages(again.data)
    assert [e["id"] for e in at_alice] == [e["id"] for e in at_bob]  # one group order
    numbers_alice = {t: e["number"] for t, e in by_text(at_alice).items()}
    numbers_bob = {t: e["number"] for t, e in by_text(at_bob).items()}
    assert numbers_alice == {"first": 1, "while": 2, "away": 3, "queued by bob": 4}
    assert numbers_bob == {"first": 1, "queued by bob": 2, "while": 3, "away": 4}
    # bob's message shows when bob ran `kith send`, not when his node started.
    queued = by_text(at_bob)["queued by bob"]
    assert before <= queued["time"] <= after, (before, queued["time"], after)
    # ... also read back from the store with the node stopped.
    stopped = by_text(await messages(bob.data))
    assert stopped["queued by bob"]["time"] == queued["time"]
    assert {t: e["number"] for t, e in stopped.items()} == numbers_bob
