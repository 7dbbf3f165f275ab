"""Sealed sender-key copies on real nodes: the author's copies survive a restart (SQLite),
so a member that was away when the key was made still gets its own later."""

from __future__ import annotations

from pathlib import Path

import trio

from node.api.python import Kith
from tests.integration.test_groups import SOON, founded, mesh, messages


def texts(node: Kith, group: str) -> list[object]:
    return [e["text"] for e in node.log(group) if e["kind"] == "message"]


async def test_a_member_away_during_a_rekey_gets_its_copy_after_the_author_restarts(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        group = await founded(nodes, "private")
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        alice.send(group, "carol was away")  # alice's first sender key: carol unreachable
        await messages(bob, group, 1)
        assert texts(bob, group) == ["carol was away"]
    # both stop: what bob held for carol was in memory only; alice's own copies are stored
    async with mesh(tmp_path, "alice", "carol") as (alice, carol):
        await messages(carol, group, 1)
        with trio.fail_after(SOON):
            await carol.service.wait_until(lambda: texts(carol, group) == ["carol was away"])
        assert texts(carol, group) == ["carol was away"]
