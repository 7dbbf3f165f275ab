"""Peer names survive a restart: stored messages keep their authors' names while they are away."""

from __future__ import annotations

from pathlib import Path

import trio

from node.api.python import open_node
from node.ids import parse_peer_id
from tests.integration.test_groups import SOON, founded, messages


async def test_authors_keep_their_names_after_a_restart_while_they_are_away(
    tmp_path: Path,
) -> None:
    async with (open_node(tmp_path / "alice", name="alice") as alice,
                open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob):
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
        bob_id = parse_peer_id(bob.peer_id)
        group = await founded([alice, bob], "private")  # alice adds bob with no label
        alice.send(group, "hello from alice")
        bob.send(group, "hello from bob")
        await messages(bob, group, 2)
        await messages(alice, group, 2)
    # Each alone now: nobody on a channel says who the other is.
    async with open_node(tmp_path / "bob", name="bob") as bob:
        log = bob.log(group)
        said = {e["text"]: e["author_name"] for e in log if e["kind"] == "message"}
        assert said == {"hello from alice": "alice", "hello from bob": "bob"}
        created = next(e for e in log if e["kind"] == "create")
        assert created["author_name"] == "alice"
        members = {m["name"] for m in bob.members(group)}
        assert members == {"alice", "bob"}
    async with open_node(tmp_path / "alice", name="alice") as alice:
        said = {e["text"]: e["author_name"] for e in alice.log(group) if e["kind"] == "message"}
        assert said == {"hello from alice": "alice", "hello from bob": "bob"}
        # The store keeps the last name each peer gave, not our short id for it.
        stored = alice.service.store.peer_names()
        assert stored == {bob_id: "bob"}
