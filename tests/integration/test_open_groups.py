"""Open groups across real nodes over loopback TCP (mDNS off: members are dialled by address).

Joining asks a connected member for the group's events (the ``open`` peer message),
then authors a JOIN; messages travel in clear inside signed events, with the same
order, sync and delivery receipts as private groups.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from node.api.python import Kith
from node.errors import KithError
from node.group.bodies import Join, OpenMessage, encode_body, kind_of
from node.group.content import Post, encode_content
from node.group.events import Event, GroupId
from node.service.groups import Group
from node.wire.messages import EventsMessage, encode_message
from node.wire.open_messages import OpenRequest, encode_open
from tests.integration import LogWatch
from tests.integration.test_groups import SOON, mesh


async def until(node: Kith, predicate: object) -> None:
    with trio.fail_after(SOON):
        await node.service.wait_until(predicate)  # type: ignore[arg-type]


def lobby(owner: Kith, policy: str) -> str:
    return str(owner._call("group.create", name="lobby", mode="open", policy=policy)["id"])


async def join(node: Kith, group: str) -> dict[str, object]:
    with trio.fail_after(SOON + 10):
        return await node._call("group.join", group=group)  # type: ignore[no-any-return]


def texts(node: Kith, group: str) -> list[str]:
    return [r["text"] for r in node.log(group) if r["kind"] == "message" and not r["deleted"]]


def forge(node: Kith, group: Group, body: OpenMessage | Join) -> Event:
    """``node``'s next event as its core sees the group, signed but NOT checked there."""
    unsigned = group.core.next_event(node.service.me, 0, kind_of(body), encode_body(body))
    return unsigned.signed(node.service.identity.sign(unsigned.signing_bytes()))


async def test_anyone_joins_a_blacklist_group_and_talks_with_receipts(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        group = lobby(alice, "blacklist")
        first = alice.send(group, "welcome to the lobby")
        alice._call("delete", group=group, event=alice.send(group, "oops")["id"])
        view = await join(bob, group)  # a history with a delete in it
        assert (view["mode"], view["policy"], view["role"]) == ("open", "blacklist", "member")
        assert texts(bob, group) == ["welcome to the lobby"]  # the history came with the join
        hello = bob.send(group, "hi all")
        await until(alice, lambda: "hi all" in texts(alice, group))
        reply = alice.send(group, "hi bob", reply_to=hello["id"])
        await until(bob, lambda: "hi bob" in texts(bob, group))
        for n in (alice, bob):
            log = n.log(group)
            assert [r["text"] for r in log if r["kind"] == "message"] == [
                "welcome to the lobby", None, "hi all", "hi bob"]  # None: the deleted one
            assert any(r["info"] == "bob joined" for r in log)
        assert [r["id"] for r in alice.log(group)] == [r["id"] for r in bob.log(group)]
        [row] = [r for r in bob.log(group) if r["id"] == reply["id"]]
        assert row["reply_to"] == hello["id"]
        # the same receipts as private groups: bob's node acknowledged alice's messages
        await until(alice, lambda: [r["state"] for r in alice.log(group) if r["id"] in (
            first["id"], reply["id"])] == ["delivered", "delivered"])
        # no end-to-end encryption: the signed event itself carries the text
        event = alice.service.find(group).core.get(bytes.fromhex(first["id"]))  # type: ignore[arg-type]
        assert event is not None and b"welcome to the lobby" in event.raw


async def test_a_peer_that_is_not_whitelisted_cannot_join(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        group = lobby(alice, "whitelist")
        alice.send(group, "members only")
        with pytest.raises(KithError, match="admits only peers an admin approved"):
            await join(bob, group)
        assert bob.groups() == []  # nothing of the group was kept
        alice._call("group.approve", group=group, peer=bob.peer_id)
        await join(bob, group)
        assert texts(bob, group) == ["members only"]
        await until(alice, lambda: bob.service.me in alice.service.find(group).core.state.members)


async def test_a_private_group_is_never_given_to_a_non_member(tmp_path: Path,
                                                              logs: LogWatch) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        private = alice.create_group("secret")
        alice.send(private, "not for bob")
        with pytest.raises(KithError, match="no open group"):
            await join(bob, private)
        assert bob.groups() == []
        assert logs.matching("refused .* no open group with this id here")


async def test_a_banned_peer_is_rejected_by_every_node_and_a_timed_ban_ends(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        alice, bob, carol = nodes
        group = lobby(alice, "blacklist")
        for n in (bob, carol):
            await join(n, group)
        for n in nodes:
            await until(n, lambda n=n: len(n.service.find(group).core.state.members) == 3)
        spam = carol.send(group, "buy now")
        for n in nodes:
            await until(n, lambda n=n: "buy now" in texts(n, group))

        # alice bans carol for 10 minutes and deletes her messages everywhere
        ban = alice._call("group.ban", group=group, peer=carol.peer_id, minutes=10, purge=True)
        assert ban["until"] is not None and ban["until"] > time.time()
        for n in nodes:
            await until(n, lambda n=n: carol.service.me in n.service.find(group).core.state.banned)
        for n in (alice, bob):  # the banned node is sent nothing after its ban
            await until(n, lambda n=n: "buy now" not in texts(n, group))
            assert n.service.find(group).core.deleted.keys() == {bytes.fromhex(spam["id"])}
        with pytest.raises(KithError, match="not a member"):
            carol.send(group, "let me back")

        # carol's node signs an event anyway: every other node rejects it
        cgroup = carol.service.find(group)
        forged = forge(carol, cgroup, OpenMessage(encode_content(Post("I'm still here"))))
        data = encode_message(EventsMessage(GroupId(bytes.fromhex(group)), (forged.raw,)))
        for n in (alice, bob):
            await carol.node.send_to(n.service.me, data)
        await logs.wait_for(rf"rejected event {forged.id.hex()[:12]} .*not a member", count=2)
        for n in (alice, bob):
            assert n.service.find(group).core.get(forged.id) is None
        with pytest.raises(KithError, match="banned"):
            await join(carol, group)

        # the ban's time passes on alice's clock: her node lifts it, carol may come back
        assert alice.service.open.expire_bans(time.time() + 3600)
        await until(bob, lambda: carol.service.me not in bob.service.find(group).core.state.banned)
        assert carol.service.me in cgroup.core.state.banned  # nobody sends a banned node news
        await join(carol, group)  # her join fetches the UNBAN from a member first
        assert carol.service.me not in cgroup.core.state.banned
        carol.send(group, "sorry")
        for n in nodes:
            await until(n, lambda n=n: "sorry" in texts(n, group))
            assert carol.service.me in n.service.find(group).core.state.members
        assert alice.service.open.expire_bans(time.time() + 3600) == []  # nothing left


async def test_a_member_refuses_strangers_events_of_an_unknown_group(tmp_path: Path,
                                                                     logs: LogWatch) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        await bob.node.send_to(alice.service.me, encode_open(OpenRequest(GroupId(b"\x07" * 32))))
        await logs.wait_for(r"refused \S+ the events of 070707070707: no open group")
        await bob.node.send_to(alice.service.me, b"\x82\xa1t\xa4open\xa1g\xc4\x03abc")
        await logs.wait_for(r"dropping message from .*32-byte group id")
        assert alice.node.connections.get(bob.service.me) is not None  # bad input: still up
