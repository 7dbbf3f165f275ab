"""``OpenGroups`` (node/service/open_groups.py) driven through its public methods.

Real nodes over loopback TCP, peers given by address (no mDNS). Where
``test_open_groups.py`` follows a user through the control-socket ops, these tests
call ``service.open`` directly and check what each call leaves behind: the
returned event, the membership state on every node, and what is stored (events,
erased texts, the group's ``left`` flag), including after a restart from the files.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from node.api.python import Kith, open_node
from node.crypto.keys import IdentityKey
from node.errors import GroupError
from node.group.bodies import Ban, Role, Unban, decode_body
from node.group.events import Event, Kind
from node.ids import PeerId
from node.service.groups import Group
from node.service.open_groups import MAX_HEARD
from node.wire.announce import GroupAnnouncement
from tests.integration.test_groups import SOON, mesh


def lobby(owner: Kith, policy: str) -> tuple[str, Group]:
    group = str(owner._call("group.create", name="lobby", mode="open", policy=policy)["id"])
    return group, owner.service.find(group)


async def until(node: Kith, predicate: object) -> None:
    with trio.fail_after(SOON):
        await node.service.wait_until(predicate)  # type: ignore[arg-type]


async def join(node: Kith, group: str) -> Group:
    with trio.fail_after(SOON + 10):
        return await node.service.open.join(group)


def me(node: Kith) -> PeerId:
    return node.service.me


def stored_kinds(node: Kith, group: Group, author: PeerId | None = None) -> list[Kind]:
    return [Kind(e.kind) for e in node.service.store.events(group.id)
            if author is None or e.author == author]


def texts(node: Kith, group: str) -> list[str | None]:
    return [r["text"] for r in node.log(group) if r["kind"] == "message"]


async def test_approving_and_taking_back_an_approval_decide_who_may_join(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob), \
            open_node(tmp_path / "carol", name="carol", peers=[alice.listen]) as carol:
        with trio.fail_after(SOON):  # carol knows alice only: alice alone answers her
            await carol.wait_for_peer(alice.peer_id)
        group, g = lobby(alice, "whitelist")
        alice.send(group, "members only")

        approval = alice.service.open.approve(g, me(bob))
        assert approval.kind is Kind.APPROVE
        alice.service.open.approve(g, me(carol))
        withdrawn = alice.service.open.approve(g, me(carol), False)
        assert g.core.state.approved == {me(bob)}
        await alice.service.committed()  # (events are stored in batches)
        assert {approval.id, withdrawn.id} <= {
            e.id for e in alice.service.store.events(g.id)}

        with pytest.raises(GroupError, match="refused: this group admits only peers an admin"):
            await join(carol, group)  # alice's node refused to hand out the group...
        assert me(carol) not in g.invited  # ...and sent her nothing of it
        assert carol.service.groups == {} and carol.service.store.groups() == []

        bg = await join(bob, group)
        assert bg.core.state.role(me(bob)) is Role.MEMBER
        assert texts(bob, group) == ["members only"]
        row = bob.service.store.group(bg.id)
        assert row is not None and (row.mode, row.left) == ("open", False)
        assert Kind.JOIN in stored_kinds(bob, bg, me(bob))
        await until(alice, lambda: me(bob) in g.core.state.members)

        # a member may not approve: refused, and nothing is authored or stored
        before = len(bob.service.store.events(bg.id))
        with pytest.raises(GroupError, match="only owner and admins may approve"):
            bob.service.open.approve(bg, me(carol))
        assert len(bob.service.store.events(bg.id)) == before
        assert me(carol) not in bg.core.state.approved


async def test_a_ban_with_purge_removes_erases_and_is_still_there_after_a_restart(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, "alice", "bob", "carol") as nodes:
        alice, bob, carol = nodes
        group, g = lobby(alice, "blacklist")
        bg, cg = await join(bob, group), await join(carol, group)
        spam = [carol.service.send(cg, f"buy now #{i}") for i in range(2)]
        for n, ng in ((alice, g), (bob, bg)):
            await until(n, lambda ng=ng: all(ng.core.get(e.id) for e in spam)
                        and len(ng.core.state.members) == 3)

        # only an admin may purge; bob's refusal authors nothing
        before = len(bob.service.store.events(bg.id))
        with pytest.raises(GroupError, match="only owner and admins"):
            bob.service.open.purge(bg, me(carol))
        assert len(bob.service.store.events(bg.id)) == before

        ban = alice.service.open.ban(g, me(carol), purge=True)
        assert ban.kind is Kind.BAN
        assert decode_body(Kind.BAN, ban.body) == Ban(me(carol), 0)
        assert alice.service.open.purge(g, me(carol)) == []  # nothing left to delete
        spam_ids = {e.id for e in spam}
        for n, ng in ((alice, g), (bob, bg)):
            await until(n, lambda ng=ng: ng.core.deleted.keys() == spam_ids
                        and me(carol) in ng.core.state.banned)
            assert me(carol) not in ng.core.state.members
            assert {d.author for d in ng.core.deleted.values()} == {me(alice)}
            await n.service.committed()
            for e in spam:
                row = n.service.store.event(e.id)
                assert row is not None and row.text is None and row.content is None
            assert texts(n, group) == [None, None]  # tombstones
        await until(carol, lambda: me(carol) in cg.core.state.banned)
        await carol.service.committed()
        carols = carol.service.store.group(cg.id)
        assert carols is not None and carols.left is True  # her node knows it is out
        with pytest.raises(GroupError, match="not a member"):
            carol.service.send(cg, "let me back")

    # alice's node starts again from its files: the ban and the deletes are still there
    async with open_node(tmp_path / "alice", name="alice") as alice:
        g = alice.service.find(group)
        assert me(carol) in g.core.state.banned and me(carol) not in g.core.state.members
        assert g.core.deleted.keys() == spam_ids
        assert texts(alice, group) == [None, None]
        assert alice.service.open.purge(g, me(carol)) == []


async def test_an_unban_lets_a_banned_peer_join_again(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "carol") as (alice, carol):
        group, g = lobby(alice, "blacklist")
        cg = await join(carol, group)
        await until(alice, lambda: me(carol) in g.core.state.members)
        alice.service.open.ban(g, me(carol))
        await until(carol, lambda: me(carol) in cg.core.state.banned)
        with pytest.raises(GroupError, match="refused: you are banned from this group"):
            await join(carol, group)

        unban = alice.service.open.unban(g, me(carol))
        assert unban.kind is Kind.UNBAN and decode_body(Kind.UNBAN, unban.body) == Unban(me(carol))
        assert me(carol) not in g.core.state.banned
        with pytest.raises(GroupError, match="that peer is not banned"):
            alice.service.open.unban(g, me(carol))
        again = await join(carol, group)
        assert again is cg  # the group she had, brought up to date
        assert me(carol) in cg.core.state.members and me(carol) not in cg.core.state.banned
        row = carol.service.store.group(cg.id)
        assert row is not None and row.left is False
        await until(alice, lambda: me(carol) in g.core.state.members)


async def test_expire_bans_lifts_each_ended_ban_once_and_only_as_an_admin(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        group, g = lobby(alice, "blacklist")
        bg = await join(bob, group)
        timed, forever = IdentityKey.generate().peer_id, IdentityKey.generate().peer_id
        now = time.time()
        alice.service.open.ban(g, timed, int(now) + 600)
        alice.service.open.ban(g, forever)
        await until(bob, lambda: bg.core.state.banned == {timed, forever})
        assert g.core.state.ban_until == {timed: int(now) + 600, forever: 0}

        assert bob.service.open.expire_bans(now + 3600) == []  # a member lifts nothing
        assert alice.service.open.expire_bans(now) == []  # not over yet
        [lifted] = alice.service.open.expire_bans(now + 3600)
        assert isinstance(lifted, Event) and lifted.author == me(alice)
        assert decode_body(Kind.UNBAN, lifted.body) == Unban(timed)
        assert g.core.state.banned == {forever}
        await alice.service.committed()
        assert alice.service.store.event(lifted.id) is not None
        assert alice.service.open.expire_bans(now + 3600) == []  # once
        await until(bob, lambda: bg.core.state.banned == {forever})


async def test_a_member_that_left_no_longer_hands_out_the_group(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        group, g = lobby(alice, "blacklist")
        bg = await join(bob, group)
        bob.service.leave(bg)
        await until(alice, lambda: me(bob) not in g.core.state.members)
        await bob.service.committed()
        row = bob.service.store.group(bg.id)
        assert row is not None and row.left is True
        # carol knows only bob, who still holds the group's events but is no member
        async with open_node(tmp_path / "carol", name="carol", peers=[bob.listen]) as carol:
            with trio.fail_after(SOON):
                await carol.wait_for_peer(bob.peer_id)
            with pytest.raises(GroupError, match="no open group with this id here"):
                await join(carol, group)
            assert carol.service.groups == {} and carol.service.store.groups() == []
        # bob may come back by himself, with what he kept
        assert await join(bob, group) is bg
        assert me(bob) in bg.core.state.members


async def test_join_says_why_it_cannot_start(tmp_path: Path) -> None:
    async with mesh(tmp_path, "alice", "bob") as (alice, bob):
        group, _ = lobby(alice, "blacklist")
        secret = alice.create_group("secret")
        alice.add(secret, bob.peer_id)
        await until(bob, lambda: any(gr.core.state.name == "secret"
                                     for gr in bob.service.groups.values()))
        with pytest.raises(GroupError, match="is not an open group; a member must add you"):
            await join(bob, secret)
        await join(bob, group)
        with pytest.raises(GroupError, match="you are already a member of 'lobby'"):
            await join(bob, group)
        with pytest.raises(GroupError, match="no open group 'nowhere' nearby"):
            await join(bob, "nowhere")


async def test_what_is_heard_is_bounded_grouped_by_group_and_forgotten(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        group, _ = lobby(alice, "blacklist")
        opened = alice.service.open
        assert opened.records() == []  # mDNS is off: nothing to announce

        def heard(instance: str, group_id: bytes, name: str, port: int) -> GroupAnnouncement:
            return GroupAnnouncement(instance, group_id, name, "whitelist",
                                     bytes(IdentityKey.generate().peer_id), ("127.0.0.1",),
                                     port, None)

        other = bytes(range(32))
        opened.heard_group(heard("kith-a-1", other, "chess", 7001))
        opened.heard_group(heard("kith-b-1", other, "chess", 7002))
        opened.heard_group(heard("kith-c-1", bytes.fromhex(group), "lobby", 7003))
        found = opened.discovered()
        assert [(e["name"], e["joined"]) for e in found] == [("chess", False), ("lobby", True)]
        servers = found[0]["servers"]
        assert isinstance(servers, list)
        assert sorted(s["address"] for s in servers) == ["127.0.0.1:7001", "127.0.0.1:7002"]

        for i in range(MAX_HEARD + 10):
            opened.heard_group(heard(f"kith-flood-{i}", bytes([i % 256]) * 32, "x", 7100))
        assert len(opened.heard) == MAX_HEARD
        assert "kith-flood-0" in opened.heard and f"kith-flood-{MAX_HEARD}" not in opened.heard

        opened.lost_group("kith-a-1")
        opened.lost_group("kith-never-heard")  # nothing to forget: no error
        [chess] = [e for e in opened.discovered() if e["name"] == "chess"]
        servers = chess["servers"]
        assert isinstance(servers, list)
        assert [s["address"] for s in servers] == ["127.0.0.1:7002"]
