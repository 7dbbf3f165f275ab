"""What ``log``, its followers and the group views show (``node.api.views``).

The member core decides what is *valid*; the views decide what a user *sees*. A
message its author made before seeing its own mute, or its own removal, is valid
(its author had every right when it wrote it): every node delivers and stores it,
and only the view keeps it from the reader. So a broken ``is_shown`` breaks no
core test; these tests catch it.

Most tests run one real node (group service, SQLite store, views) and hand it the
events of another member, ``bob``, signed with bob's key by a ``Replica`` that holds
bob's own copy of the group. The test decides exactly what bob had seen when he
wrote each event, which is what makes a message "concurrent with the mute". The
last test does the same across three nodes of a private group over loopback TCP.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.api.group_ops import notice_view
from node.api.python import Kith, open_node
from node.crypto.keys import IdentityKey
from node.group.bodies import Join, OpenMessage
from node.group.content import Post, React, encode_content
from node.group.events import Event, EventId
from node.ids import format_peer_id, parse_peer_id
from node.service.groups import Group, Notice
from node.testing.groups import Replica
from tests.integration.test_groups import SOON, founded, mesh


@dataclass
class Lobby:
    """alice's node with an open group that bob (a ``Replica``, no node) has joined."""

    alice: Kith
    group: str
    g: Group
    bob: Replica

    @property
    def bob_id(self) -> str:
        return format_peer_id(self.bob.peer_id)

    def catch_up_bob(self) -> None:
        """bob receives everything alice's node has (his next events will have seen it)."""
        self.bob.receive(*[e for e in self.g.core.ordered() if self.bob.core.get(e.id) is None])

    def says(self, text: str, reply_to: str | None = None) -> Event:
        target = EventId(bytes.fromhex(reply_to)) if reply_to is not None else None
        return self.bob.author(OpenMessage(encode_content(Post(text, target))))

    def reacts(self, target: str, emoji: str) -> Event:
        return self.bob.author(OpenMessage(encode_content(
            React(EventId(bytes.fromhex(target)), emoji))))

    def hand(self, *events: Event) -> None:
        """alice's node receives ``events`` from bob; each must be delivered."""
        self.alice.service.deliver(self.g, events, self.bob.peer_id)
        self.alice.service.commit_now()  # stored now, not at the end of this step
        for e in events:
            assert self.g.core.get(e.id) is not None, f"{e.id.hex()[:12]} was not delivered"

    def log(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.alice._call("log", group=self.group, **params))


@asynccontextmanager
async def lobby(tmp: Path) -> AsyncIterator[Lobby]:
    async with open_node(tmp / "alice", name="alice") as alice:
        group = str(alice._call("group.create", name="lobby", mode="open",
                                policy="blacklist")["id"])
        g = alice.service.find(group)
        s = Lobby(alice, group, g, Replica(IdentityKey.generate(), g.id))
        s.catch_up_bob()
        s.hand(s.bob.author(Join("bob")))
        assert s.bob.peer_id in g.core.state.members
        yield s


def texts(rows: list[dict[str, Any]]) -> list[str | None]:
    return [r["text"] for r in rows if r["kind"] == "message"]


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows}


def row(rows: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    [found] = [r for r in rows if r["id"] == event_id]
    return found


def drain(notices: trio.MemoryReceiveChannel[Notice]) -> list[Event]:
    """The events queued for a follower so far."""
    out: list[Event] = []
    while True:
        try:
            notice = notices.receive_nowait()
        except trio.WouldBlock:
            return out
        if isinstance(notice, Event):
            out.append(notice)


async def test_a_message_written_before_its_author_saw_the_mute_is_never_shown(
    tmp_path: Path,
) -> None:
    async with lobby(tmp_path) as s:
        question = s.alice.send(s.group, "who is coming?")
        s.catch_up_bob()
        before = s.says("me, before the mute")
        s.hand(before)
        during = s.says("spam written while the mute was on its way")  # bob has not seen it
        thumbs = s.reacts(question["id"], "👍")
        mute = s.alice.mute(s.group, s.bob_id)
        with s.alice.service.watch_notices(s.g) as notices:
            s.hand(during, thumbs)
            followed = drain(notices)

        # valid and stored: only the view keeps them from the reader
        for e in (during, thumbs):
            assert s.g.core.is_muted(e)
            assert s.alice.service.store.has_event(e.id)
        log, everything = s.log(), s.log(all=True)
        assert texts(log) == ["who is coming?", "me, before the mute"]
        assert not {during.id.hex(), thumbs.id.hex()} & ids(everything)  # not even with all
        assert row(log, question["id"])["reactions"] == {}
        assert mute["id"] in ids(everything) and mute["id"] not in ids(log)  # folded
        # a follower (``kith log --follow``, ``Kith.events``) is told nothing of them
        assert {during.id, thumbs.id} <= {e.id for e in followed}
        for e in followed:
            assert notice_view(s.alice.service, s.g, e) is None, e.id.hex()[:12]
        assert s.alice.groups()[0]["unread"] == 1  # "me, before the mute"
        [bob_row] = [m for m in s.alice.members(s.group) if m["peer_id"] == s.bob_id]
        assert bob_row["muted"] and bob_row["muted_until"] is None

        # once bob has seen the unmute, what he writes is shown again
        s.alice.mute(s.group, s.bob_id, unmute=True)
        s.catch_up_bob()
        after = s.says("thanks for unmuting me")
        with s.alice.service.watch_notices(s.g) as notices:
            s.hand(after)
            [followed_after] = drain(notices)
        assert texts(s.log()) == ["who is coming?", "me, before the mute",
                                  "thanks for unmuting me"]
        assert during.id.hex() not in ids(s.log(all=True))  # the unmute does not revive it
        shown = notice_view(s.alice.service, s.g, followed_after)
        assert shown is not None and shown["text"] == "thanks for unmuting me"


async def test_a_message_written_before_its_author_saw_its_removal_is_never_shown(
    tmp_path: Path,
) -> None:
    async with lobby(tmp_path) as s:
        before = s.says("hello from bob")
        s.hand(before)
        concurrent = s.says("bob again, not knowing he is out")
        removal = s.alice.remove(s.group, s.bob_id)
        with s.alice.service.watch_notices(s.g) as notices:
            s.hand(concurrent)
            followed = drain(notices)
        assert s.g.core.is_withdrawn(concurrent.author, concurrent.seq)
        assert s.alice.service.store.has_event(concurrent.id)
        assert s.bob.peer_id not in s.g.core.state.members
        log, everything = s.log(), s.log(all=True)
        assert texts(log) == ["hello from bob"]
        assert concurrent.id.hex() not in ids(everything)
        assert removal["id"] in ids(log)  # a membership change is shown, with a line
        assert row(log, removal["id"])["info"] == "alice removed bob"
        assert [e.id for e in followed] == [concurrent.id]
        assert notice_view(s.alice.service, s.g, followed[0]) is None
        assert s.alice.groups()[0]["unread"] == 1


async def test_a_deleted_message_is_shown_as_a_tombstone(tmp_path: Path) -> None:
    async with lobby(tmp_path) as s:
        rude = s.says("something rude")
        s.hand(rude)
        answer = s.alice.send(s.group, "please don't", reply_to=rude.id.hex())
        gone = s.alice.delete(s.group, rude.id.hex())
        assert (gone["kind"], gone["target"]) == ("delete", rude.id.hex())

        log = s.log()
        assert [r["id"] for r in log if r["kind"] == "message"] == [rude.id.hex(), answer["id"]]
        tomb = row(log, rude.id.hex())
        assert (tomb["deleted"], tomb["text"], tomb["deleted_by"]) == (True, None, "alice")
        assert tomb["author_name"] == "bob"
        preview = row(log, answer["id"])["reply_preview"]
        assert preview["deleted"] is True and preview["text"] is None
        assert gone["id"] not in ids(log)  # the DELETE is folded into its target...
        assert row(s.log(all=True), gone["id"])["target"] == rude.id.hex()  # ...shown with all
        stored = s.alice.service.store.event(rude.id)
        assert stored is not None and stored.text is None and stored.content is None
        assert s.alice.groups()[0]["unread"] == 0  # a tombstone is nothing to read


async def test_bookkeeping_and_folded_events_appear_only_with_all(tmp_path: Path) -> None:
    async with lobby(tmp_path) as s:
        hello = s.says("hello")
        s.hand(hello)
        post = s.alice.send(s.group, "typo hree")
        edit = s.alice.edit(s.group, post["id"], "typo here")
        react = s.alice.react(s.group, hello.id.hex(), "🎉")
        pin = s.alice.pin(s.group, post["id"])
        s.alice.log(s.group, read=True)
        s.alice.service._flush_receipts()  # alice's read receipt: a RECEIPT event
        receipts = [e.id.hex() for e in s.g.core.ordered() if e.kind.name == "RECEIPT"]
        assert len(receipts) == 1

        log, everything = s.log(), s.log(all=True)
        assert [r["kind"] for r in log] == ["create", "join", "message", "message"]
        assert texts(log) == ["hello", "typo here"]
        assert row(log, post["id"])["pinned"] and row(log, post["id"])["edited"]
        assert row(log, hello.id.hex())["reactions"] == {"🎉": ["alice"]}
        folded = {edit["id"]: "edit", react["id"]: "reaction", pin["id"]: "pin",
                  receipts[0]: "receipt"}
        assert {r["id"]: r["kind"] for r in everything if r["id"] in folded} == folded
        assert not folded.keys() & ids(log)
        assert len(s.log(limit=1)) == 1 and s.log(limit=1)[0]["id"] == post["id"]


async def test_a_muted_members_message_is_hidden_on_every_node_of_a_private_group(
    tmp_path: Path,
) -> None:
    """Over real nodes: bob writes while cut off; alice mutes him before it arrives."""
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        alice, bob, carol = nodes
        group = await founded(nodes, "private")
        bob_id = parse_peer_id(bob.peer_id)
        bob.node.set_offline(True)
        unseen = bob.send(group, "written before bob saw his mute")
        mute = alice.mute(group, bob.peer_id)
        bob.node.set_offline(False)

        def has_both(g: Group) -> bool:
            return all(g.core.get(EventId(bytes.fromhex(e["id"]))) is not None
                       for e in (unseen, mute))

        with trio.fail_after(SOON):
            for n in nodes:
                await n.service.wait_until(functools.partial(has_both, n.service.find(group)))
        for n in nodes:
            g = n.service.find(group)
            event = g.core.get(EventId(bytes.fromhex(unseen["id"])))
            assert event is not None and g.core.is_muted(event)
            assert bob_id in g.core.state.muted()
            everything = n._call("log", group=group, all=True)
            assert unseen["id"] not in ids(everything), n.node.name
            assert texts(n.log(group)) == [], n.node.name
        # carol could read it (it reached her node decrypted) and still is not shown it
        assert carol.service.find(group).texts.get(
            EventId(bytes.fromhex(unseen["id"]))) == "written before bob saw his mute"
