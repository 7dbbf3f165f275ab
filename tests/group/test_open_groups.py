"""Open groups in the pure core: JOIN under both policies, approvals, bans, timed bans.

Every rule is decided from an event's causal past, so every node that has the same
events reaches the same membership whatever order they arrived in (hypothesis).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.group.bodies import (
    Add,
    Approve,
    Ban,
    Body,
    Create,
    Join,
    Leave,
    OpenMessage,
    Role,
    Unban,
    decode_body,
    encode_body,
    group_id_for,
    kind_of,
)
from node.group.content import Post, encode_content
from node.group.events import Event, EventError, Kind
from node.group.state import Delivered, GroupCore, Rejected
from node.testing.groups import Replica

KEYS = [IdentityKey(bytes([i]) * 32) for i in range(20, 26)]
OWNER, ADMIN, XAVIER, YVES, ZOE = (k.peer_id for k in KEYS[:5])


def lobby(policy: str, *, admin: bool = True) -> tuple[Replica, list[Event]]:
    """An open group founded by OWNER (with ADMIN as admin); returns the history."""
    nonce = os.urandom(16)
    owner = Replica(KEYS[0], group_id_for(OWNER, nonce))
    history = [owner.author(Create("lobby", "open", nonce, 500, policy=policy))]
    if admin:
        history.append(owner.author(Add(ADMIN, Role.ADMIN, "admin")))
    return owner, history


def newcomer(key: IdentityKey, owner: Replica, history: list[Event]) -> Replica:
    replica = Replica(key, owner.core.group_id)
    replica.receive(*history)
    return replica


def forge(replica: Replica, body: Body) -> Event:
    """Sign the next event of ``replica`` WITHOUT its own core checking it."""
    unsigned = replica.core.next_event(replica.peer_id, 0, kind_of(body), encode_body(body))
    return unsigned.signed(bytes(replica.key.signing_key.sign(unsigned.signing_bytes()).signature))


def say(replica: Replica, text: str) -> Event:
    return replica.author(OpenMessage(encode_content(Post(text))))


def rejected(replica: Replica, event: Event) -> str:
    effects = replica.receive(event)
    reasons = [e.reason for e in effects if isinstance(e, Rejected)]
    assert reasons, effects
    return reasons[0]


def delivered(replica: Replica, *events: Event) -> None:
    effects = replica.receive(*events)
    assert {e.event.id for e in effects if isinstance(e, Delivered)} >= {e.id for e in events}, (
        effects)


# -- bodies --


def test_open_bodies_round_trip_and_reject_malformed_ones() -> None:
    create = Create("lobby", "open", b"n" * 16, 500, policy="whitelist")
    assert decode_body(Kind.CREATE, encode_body(create)) == create
    for body in (Ban(XAVIER, 1_700_000_000), Ban(XAVIER), Unban(XAVIER), Join("xav"),
                 Join(""), Approve(XAVIER, False), OpenMessage(b"\x81\xa4text\xa2hi")):
        assert decode_body(kind_of(body), encode_body(body), mode="open") == body
    assert encode_body(Ban(XAVIER)) == encode_body(Ban(XAVIER, 0))  # the old form, unchanged
    with pytest.raises(EventError, match="policy"):  # an open group must say who may join
        decode_body(Kind.CREATE, encode_body(Create("lobby", "open", b"n" * 16, 500)))
    private = {"name": "g", "mode": "private", "nonce": b"n" * 16, "max": 5, "add": "members",
               "history": False, "policy": "blacklist"}
    from node.wire.strict import pack
    with pytest.raises(EventError, match="unknown keys"):  # only open groups carry one
        decode_body(Kind.CREATE, pack(private))
    with pytest.raises(EventError, match="until"):  # 0 is written by leaving the key out
        decode_body(Kind.BAN, pack({"member": XAVIER, "until": 0}))
    with pytest.raises(EventError, match="policy"):
        decode_body(Kind.CREATE, pack({**private, "mode": "open", "policy": "anyone"}))


# -- joining --


def test_anyone_may_join_a_blacklist_group_and_post() -> None:
    owner, history = lobby("blacklist")
    xavier = newcomer(KEYS[2], owner, history)
    join = xavier.author(Join("xavier"))
    hello = say(xavier, "hello")
    delivered(owner, join, hello)
    assert owner.core.state.members[XAVIER] is Role.MEMBER
    assert owner.core.state.labels[XAVIER] == "xavier"
    assert not owner.core.is_withdrawn(XAVIER, hello.seq)
    assert "already a member" in rejected(owner, forge(xavier, Join("again")))


def test_a_private_group_cannot_be_joined() -> None:
    owner, create = Replica.founding(KEYS[0])
    stranger = newcomer(KEYS[2], owner, [create])
    assert "only open groups" in rejected(owner, forge(stranger, Join("")))


def test_whitelist_admits_only_approved_peers() -> None:
    owner, history = lobby("whitelist")
    xavier = newcomer(KEYS[2], owner, history)
    assert "approved" in rejected(owner, forge(xavier, Join("xavier")))

    approve = owner.author(Approve(XAVIER, True))
    xavier.receive(approve)
    join = xavier.author(Join("xavier"))
    delivered(owner, join)
    assert XAVIER in owner.core.state.members

    # A member may not smuggle in a peer that is not approved; an admin may.
    assert "not approved" in rejected(owner, forge(xavier, Add(YVES, Role.MEMBER, "")))
    admin = newcomer(KEYS[1], owner, [*history, approve, join])
    delivered(owner, admin.author(Add(YVES, Role.MEMBER, "")))
    assert YVES in owner.core.state.members

    # Taking an approval back stops future joins; it removes nobody.
    unapprove = owner.author(Approve(XAVIER, False))
    assert XAVIER not in owner.core.state.approved and XAVIER in owner.core.state.members
    zoe = newcomer(KEYS[4], owner, [*history, approve, unapprove])
    assert "approved" in rejected(owner, forge(zoe, Join("zoe")))


def test_only_admins_approve_and_only_with_a_whitelist() -> None:
    owner, history = lobby("whitelist")
    xavier = newcomer(KEYS[2], owner, history)
    owner.receive(owner.author(Approve(XAVIER, True)))
    xavier.receive(*owner.core.ordered())
    join = xavier.author(Join(""))
    owner.receive(join)
    assert "only owner and admins" in rejected(owner, forge(xavier, Approve(ZOE, True)))
    blacklist, history = lobby("blacklist")
    assert "whitelist" in rejected(blacklist, forge(blacklist, Approve(ZOE, True)))


# -- bans --


def test_a_banned_peer_is_rejected_by_every_node_and_cannot_rejoin() -> None:
    owner, history = lobby("blacklist")
    xavier = newcomer(KEYS[2], owner, history)
    join, early = xavier.author(Join("x")), say(xavier, "before the ban")
    owner.receive(join, early)
    admin = newcomer(KEYS[1], owner, [*history, join, early])
    ban = admin.author(Ban(XAVIER))
    concurrent = say(xavier, "sent while the ban travelled")  # xavier had not seen it
    others = [owner, newcomer(KEYS[3], owner, [*history, join, early])]
    for node in others:
        delivered(node, ban, concurrent)
        assert XAVIER in node.core.state.banned and XAVIER not in node.core.state.members
        assert not node.core.is_withdrawn(XAVIER, early.seq)
        assert node.core.is_withdrawn(XAVIER, concurrent.seq)  # never shown anywhere
    xavier.receive(ban)
    after = forge(xavier, OpenMessage(encode_content(Post("I am still here"))))
    rejoin = forge(xavier, Join("x again"))
    for node in others:
        assert "not a member" in rejected(node, after)
    late = newcomer(KEYS[4], owner, owner.core.ordered())  # a node that never saw xavier talk
    assert "banned" in rejected(late, rejoin)
    assert "nobody can remove or ban the owner" in rejected(owner, forge(admin, Ban(OWNER)))


def test_a_timed_ban_ends_with_an_unban_and_the_peer_may_come_back() -> None:
    owner, history = lobby("blacklist")
    xavier = newcomer(KEYS[2], owner, history)
    join = xavier.author(Join("x"))
    owner.receive(join)
    ban = owner.author(Ban(XAVIER, until=1_700_000_600))
    assert owner.core.state.ban_until == {XAVIER: 1_700_000_600}
    xavier.receive(ban)
    assert "banned" in rejected(owner, forge(xavier, Join("x")))
    assert "not banned" in rejected(owner, forge(owner, Unban(YVES)))
    unban = owner.author(Unban(XAVIER))  # what an admin's node writes once the time is up
    assert XAVIER not in owner.core.state.banned and not owner.core.state.ban_until
    xavier.receive(unban)
    back = xavier.author(Join("x is back"))
    hello = say(xavier, "hello again")
    delivered(owner, back, hello)
    assert owner.core.state.members[XAVIER] is Role.MEMBER
    assert not owner.core.is_withdrawn(XAVIER, back.seq)
    assert not owner.core.is_withdrawn(XAVIER, hello.seq)


def test_a_member_who_left_may_join_again() -> None:
    owner, history = lobby("blacklist", admin=False)
    xavier = newcomer(KEYS[2], owner, history)
    events = [xavier.author(Join("x")), xavier.author(Leave()), xavier.author(Join("x2"))]
    hello = say(xavier, "back")
    delivered(owner, *events, hello)
    assert XAVIER in owner.core.state.members and not owner.core.is_withdrawn(XAVIER, hello.seq)


# -- convergence --


def _story() -> list[Event]:
    """Concurrent joins, approvals, bans, an unban and messages in a whitelist group."""
    owner, history = lobby("whitelist")
    admin = newcomer(KEYS[1], owner, history)
    events = list(history)
    a1, a2 = owner.author(Approve(XAVIER, True)), owner.author(Approve(YVES, True))
    events += [a1, a2]
    xavier, yves = newcomer(KEYS[2], owner, events), newcomer(KEYS[3], owner, events)
    admin.receive(a1, a2)
    jx, jy = xavier.author(Join("x")), yves.author(Join("y"))
    mx = say(xavier, "x1")
    events += [jx, jy, mx]
    admin.receive(jx, mx)
    ban = admin.author(Ban(XAVIER, until=5))  # concurrent with what follows from xavier
    mx2 = say(xavier, "x2 (concurrent with the ban)")
    yves.receive(jx, mx)
    my = say(yves, "y1")
    owner.receive(jx, jy, mx, ban)
    unban = owner.author(Unban(XAVIER))
    unapprove = owner.author(Approve(YVES, False))  # concurrent with yves' message
    events += [ban, mx2, my, unban, unapprove]
    return events


STORY = _story()


@settings(max_examples=60, deadline=None)
@given(st.permutations(STORY))
def test_every_delivery_order_gives_the_same_membership(order: list[Event]) -> None:
    core = GroupCore(STORY[0].group)
    for event in order:
        for effect in core.receive(event):
            assert not isinstance(effect, Rejected), effect
    reference = GroupCore(STORY[0].group)
    for event in STORY:
        reference.receive(event)
    for c in (core, reference):
        assert XAVIER not in c.state.banned and XAVIER not in c.state.members
        assert c.state.members[YVES] is Role.MEMBER
    assert core.state.members == reference.state.members
    assert core.state.approved == reference.state.approved == {XAVIER}
    assert [e.id for e in core.ordered()] == [e.id for e in reference.ordered()]
    shown = [[e.id for e in c.ordered() if not c.is_withdrawn(e.author, e.seq)]
             for c in (core, reference)]
    assert shown[0] == shown[1]
    assert STORY[-4].id not in shown[0]  # xavier's message concurrent with the ban
