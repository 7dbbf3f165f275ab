"""Replies, edits, reactions, pins, deletes, mutes and typing across real nodes (loopback TCP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from node.api.python import Kith
from node.errors import KithError
from node.ids import parse_peer_id
from node.service.groups import TypingNotice
from tests.integration.test_groups import SOON, founded, mesh


def view(node: Kith, group: str, event_id: str) -> dict[str, Any]:
    [row] = [r for r in node.log(group) if r["id"] == event_id]
    return row


async def until(node: Kith, predicate: Any) -> None:
    with trio.fail_after(SOON):
        await node.service.wait_until(predicate)


def has(node: Kith, group: str, event_id: str) -> bool:
    g = node.service.find(group)
    return any(e.id.hex() == event_id for e in g.core.ordered())


def file_bytes(node: Kith) -> bytes:
    path = node.service.store.path
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.mark.parametrize("mode", ["private", "pairwise"])
async def test_a_conversation_with_every_feature(tmp_path: Path, mode: str) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        alice, bob, carol = nodes
        group = await founded(nodes, mode)
        question = alice.send(group, "lunch at noon? @bob")
        assert question["mentions"] == [bob.peer_id] and not question["mentions_me"]
        await until(bob, lambda: has(bob, group, question["id"]))
        assert view(bob, group, question["id"])["mentions_me"]
        answer = bob.send(group, "yes!", reply_to=question["id"][:10])
        edit = alice.edit(group, question["id"], "lunch at 12:30?")
        assert edit["kind"] == "edit" and edit["target"] == question["id"]
        react = carol_reacts = None
        await until(carol, lambda: has(carol, group, answer["id"]))
        carol_reacts = carol.react(group, answer["id"], "👍")
        react = bob.react(group, answer["id"], "👍")
        assert carol_reacts["kind"] == react["kind"] == "reaction"
        pin = alice.pin(group, question["id"])
        assert pin["kind"] == "pin"
        for n in nodes:
            await until(n, lambda n=n: all(has(n, group, e["id"])
                                           for e in (edit, carol_reacts, react, pin)))
            q, a = view(n, group, question["id"]), view(n, group, answer["id"])
            assert (q["text"], q["edited"], q["pinned"]) == ("lunch at 12:30?", True, True)
            assert [e["text"] for e in q["edits"]] == ["lunch at noon? @bob"]
            assert a["reply_to"] == question["id"]
            assert a["reply_preview"]["text"] == "lunch at 12:30?"
            assert a["reply_preview"]["author_name"] == "alice"
            assert {k: sorted(v) for k, v in a["reactions"].items()} == {"👍": ["bob", "carol"]}
            kinds = [r["kind"] for r in n.log(group)]
            assert "edit" not in kinds and "reaction" not in kinds and "pin" not in kinds
            assert {r["kind"] for r in n._call("log", group=group, all=True)} >= {
                "edit", "reaction", "pin"}
            assert n.groups()[0]["pinned"] == [question["id"]]
        bob.react(group, answer["id"], "👍", remove=True)
        await until(alice, lambda: view(alice, group, answer["id"])["reactions"]
                    == {"👍": ["carol"]})

        # bob deletes his own secret; alice (admin) deletes carol's: gone from every file
        secret = bob.send(group, "the wifi password is hunter2-" + mode)
        gossip = carol.send(group, "carol's gossip-" + mode)
        for n in nodes:  # (in memory first, on disk when its batch is stored: group commit)
            await until(n, lambda n=n: has(n, group, secret["id"]) and has(n, group,
                                                                            gossip["id"])
                        and b"hunter2-" + mode.encode() in file_bytes(n))
        with pytest.raises(KithError, match="only the author or an admin may delete"):
            carol.delete(group, secret["id"])
        with pytest.raises(KithError, match="only the author may edit"):
            carol.edit(group, secret["id"], "mine now")
        with pytest.raises(KithError, match="only owner and admins may pin"):
            carol.pin(group, secret["id"])
        gone = bob.delete(group, secret["id"])
        alice.delete(group, gossip["id"])
        for n in nodes:
            await until(n, lambda n=n: gone["id"] in {e.id.hex() for e in
                                                      n.service.find(group).core.ordered()}
                        and len(n.service.find(group).core.deleted) == 2
                        and not n.service.pending())  # (and stored: group commit)
            row = view(n, group, secret["id"])
            assert row["deleted"] and row["text"] is None and row["deleted_by"] == "bob"
            assert view(n, group, gossip["id"])["deleted_by"] == "alice"
            data = file_bytes(n)
            assert b"hunter2-" + mode.encode() not in data
            assert b"gossip-" + mode.encode() not in data
        with pytest.raises(KithError, match="was deleted"):
            bob.react(group, secret["id"], "😢")
        with pytest.raises(KithError, match="no such event"):
            bob.react(group, "00" * 32, "😢")
        with pytest.raises(KithError, match=r"reaction is 1\.\.16"):
            bob.react(group, answer["id"], "x" * 17)


async def test_an_admin_mutes_a_member_for_a_while(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        alice, bob, carol = nodes
        group = await founded(nodes, "private")
        with pytest.raises(KithError, match="only owner and admins may mute"):
            carol.mute(group, bob.peer_id)
        mute = alice.mute(group, bob.peer_id, minutes=5)
        assert mute["kind"] == "mute"
        bob_id = parse_peer_id(bob.peer_id)
        await until(bob, lambda: bob_id in bob.service.find(group).core.state.muted())
        with pytest.raises(KithError, match="muted you"):
            bob.send(group, "let me speak")
        [row] = [m for m in carol.members(group) if m["peer_id"] == bob.peer_id]
        await until(carol, lambda: bob_id in carol.service.find(group).core.state.muted())
        [row] = [m for m in carol.members(group) if m["peer_id"] == bob.peer_id]
        assert row["muted"] and row["muted_until"] is not None
        # the admin's clock passes the end: its node unmutes bob, for everyone
        assert alice.service.expire_mutes(mute["until"] - 1) == []
        [unmute] = alice.service.expire_mutes(mute["until"] + 1)
        await until(bob, lambda: bob_id not in bob.service.find(group).core.state.muted())
        spoken = bob.send(group, "thanks")
        await until(carol, lambda: has(carol, group, spoken["id"]))
        assert view(carol, group, spoken["id"])["text"] == "thanks"
        assert unmute.id.hex() in {r["id"] for r in carol._call("log", group=group, all=True)}


async def test_typing_reaches_online_members_and_is_never_stored(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        g = alice.service.find(group)
        events_before = len(g.core.ordered())
        with alice.service.watch_notices(g) as notices:
            bob.typing(group)
            bob.typing(group)  # rate-limited: one notice
            with trio.fail_after(SOON):
                notice = await notices.receive()
        assert notice == TypingNotice(g.id, parse_peer_id(bob.peer_id))
        [row] = [m for m in alice.members(group) if m["peer_id"] == bob.peer_id]
        assert row["typing"]
        assert len(g.core.ordered()) == events_before
        assert len(alice.service.store.events(g.id)) == events_before


async def test_unread_counts_and_local_notification_mute(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as nodes:
        alice, bob = nodes
        group = await founded(nodes, "private")
        for i in range(3):
            last = bob.send(group, f"ping {i}")
        await until(alice, lambda: has(alice, group, last["id"]))
        assert alice.groups()[0]["unread"] == 3 and bob.groups()[0]["unread"] == 0
        alice.log(group, read=True)
        assert alice.groups()[0]["unread"] == 0
        assert alice.notify(group, True)["muted"] is True
        assert alice.service.store.notify_muted(alice.service.find(group).id)
        assert alice.notify(group, False)["muted"] is False
