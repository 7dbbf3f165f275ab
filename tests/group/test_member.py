"""The member core without sockets: members wired by hand, effects asserted directly."""

from __future__ import annotations

import pytest

from node.crypto.keys import IdentityKey
from node.group import commands as C
from node.group.bodies import PrivateMessage, Role, encode_body
from node.group.events import Kind
from node.group.member import Member
from node.group.member_io import (
    Authored,
    Events,
    Received,
    Refused,
    SaveEvent,
    SaveOwnKey,
    Send,
    SendMany,
    SetLeft,
    Warn,
)
from node.group.state import GroupCore
from tests.group.cluster import Cluster


def founded(n: int, mode: str = "private", **kw: bool) -> Cluster:
    c = Cluster(n, mode, **kw)
    for peer in c.ids[1:]:
        c.do(c.ids[0], C.AddMember(peer))
    c.connect_all()
    c.settle()
    return c


@pytest.mark.parametrize("mode", ["private", "pairwise"])
def test_every_member_reads_every_message(mode: str) -> None:
    c = founded(4, mode)
    sent = [c.do(p, C.SendText(f"hi from {i}")) for i, p in enumerate(c.ids)]
    c.settle()
    for p in c.ids:
        assert [c.members[p].texts[e.id] for e in sent] == [f"hi from {i}" for i in range(4)]
        assert c.order(p) == c.order(c.ids[0])


def test_an_event_is_persisted_before_it_is_sent() -> None:
    c = founded(2)
    effects = c.members[c.ids[0]].handle(C.SendText("x"), c.now)
    assert isinstance(effects[0], Authored)
    kinds = [type(e) for e in effects]
    first_send = min(i for i, k in enumerate(kinds) if k in (Send, SendMany))
    assert SaveEvent in kinds[:first_send] and SaveOwnKey in kinds[:first_send]
    c.run(c.ids[0], effects)


def test_a_command_that_cannot_be_done_is_refused_not_raised() -> None:
    c = founded(2)
    bob = c.members[c.ids[1]]
    effects = bob.handle(C.RemoveMember(c.ids[0]), c.now)
    assert len(effects) == 1 and isinstance(effects[0], Refused)
    assert "admin" in effects[0].reason or "owner" in effects[0].reason
    theirs = c.do(c.ids[0], C.SendText("mine"))
    c.settle()
    assert bob.handle(C.EditText(theirs.id, "not mine"), c.now) == [
        Refused("only the author may edit a message")]


def test_an_outsiders_event_is_a_returned_warning_with_its_reason() -> None:
    c = founded(2)
    alice, bob = c.ids
    outsider = IdentityKey.generate()
    body = PrivateMessage(0, bytes(48))
    unsigned = c.members[bob].core.copy().next_event(outsider.peer_id, 0, Kind.MESSAGE,
                                                     encode_body(body))
    event = unsigned.signed(outsider.sign(unsigned.signing_bytes()))
    member = c.members[bob]
    effects = member.handle(Received(alice, Events((event,))), c.now)
    warnings = [e for e in effects if isinstance(e, Warn)]
    assert warnings and "rejected event" in warnings[0].text, effects
    assert "no sender key of its author" in warnings[0].text
    assert not any(isinstance(e, SaveEvent) for e in effects)
    assert member.rejected == 1 and event.id not in {e.id for e in member.core.ordered()}


def test_restart_from_what_was_persisted() -> None:
    c = founded(3)
    b = c.ids[1]
    before = c.do(b, C.SendText("before"))
    c.settle()
    c.restart(b)
    c.connect_all()
    c.settle()
    after = c.do(b, C.SendText("after"))  # the restarted chain goes on, no key reuse
    c.settle()
    for p in c.ids:
        assert c.members[p].texts[before.id] == "before"
        assert c.members[p].texts[after.id] == "after"


@pytest.mark.parametrize("demote", [False, True])
def test_a_batch_with_an_add_then_our_removal_or_demotion(demote: bool) -> None:
    """Regression: a newcomer's ADD followed, in the same batch, by this member's removal
    (or demotion to guest) made the node author a SENDER_KEY its core refused, and exit."""
    c = Cluster(4)
    alice, bob, carol, dave = c.ids
    c.do(alice, C.AddMember(bob, Role.ADMIN))
    c.do(alice, C.AddMember(carol))
    c.connect_all([alice, bob, carol])
    c.settle()
    c.do(carol, C.SendText("carol has a sender key"))
    c.settle()
    assert c.members[carol].keys.own is not None
    # alice's next two events reach carol in one batch
    c.disconnect(alice, carol)
    add = c.do(alice, C.AddMember(dave))
    cut = c.do(alice, C.SetMemberRole(carol, Role.GUEST) if demote else C.RemoveMember(carol))
    effects = c.members[carol].handle(Received(alice, Events((add, cut))), c.now)
    assert not any(isinstance(e, Refused) for e in effects)
    assert not [e for e in effects if isinstance(e, Warn) and e.level >= 40], effects
    c.run(carol, effects)
    carols = c.members[carol]
    assert dave in carols.core.state.members
    if demote:
        assert carols.core.state.role(carol) is Role.GUEST
    else:
        assert carol not in carols.core.state.members
        assert any(isinstance(e, SetLeft) and e.left for e in effects)
    assert not any(isinstance(e, Send | SendMany) and e.kind == "rekey" for e in effects)


@pytest.mark.parametrize("seed", range(4))
def test_a_member_kept_after_conflicting_removals_reads_the_partition(seed: int) -> None:
    """Regression: after a partition in which conflicting removals resolved so that a
    member stays, that member could never read messages sent under sender keys
    started during the partition."""
    c = Cluster(4, seed=seed)
    alice, bob, carol, dave = c.ids
    c.do(alice, C.AddMember(bob, Role.ADMIN))
    c.do(alice, C.AddMember(carol, Role.ADMIN))
    c.do(alice, C.AddMember(dave))
    c.connect_all()
    c.settle()
    for p in c.ids:
        c.do(p, C.SendText(f"hello from {p.hex()[:4]}"))
    c.settle()
    c.partition([alice, bob], [carol, dave])
    # bob removes carol, carol removes bob: concurrent, conflicting
    c.do(bob, C.RemoveMember(carol))
    c.do(carol, C.RemoveMember(bob))
    c.settle()
    during = [c.do(alice, C.SendText("alice during")), c.do(bob, C.SendText("bob during")),
              c.do(carol, C.SendText("carol during")), c.do(dave, C.SendText("dave during"))]
    c.settle()
    c.connect_all()
    c.settle()
    final = c.members[alice].core.state.members
    assert all(c.members[p].core.state.members == final for p in c.ids)
    assert all(c.order(p) == c.order(alice) for p in c.ids if p in final)
    kept = [p for p in (bob, carol) if p in final]
    assert len(kept) == 1, "exactly one of the conflicting removals wins"
    restored = [w for p in c.ids for w in c.warnings[p] if "is a member after all" in w.text]
    assert restored, "someone who had seen the losing removal restores the kept member"
    for reader in [p for p in c.ids if p in final]:
        for event in during:
            if event.author in final:
                assert c.members[reader].texts.get(event.id) is not None, (
                    reader.hex()[:4], event.author.hex()[:4])


def test_an_add_reaches_a_newcomer_with_the_history_and_keys() -> None:
    c = founded(2)
    alice, bob = c.ids
    early = c.do(bob, C.SendText("before carol"))
    c.settle()
    newcomer = IdentityKey.generate()
    c.keys.append(newcomer)
    carol = newcomer.peer_id
    c.ids.append(carol)
    c.disks[carol] = type(c.disks[alice])()
    c.wakes[carol], c.warnings[carol] = [], []
    c.members[carol] = Member(newcomer, GroupCore(c.group), c.rng.randbytes, joined_at=c.now)
    c.connect_all()
    c.do(alice, C.AddMember(carol))
    c.settle()
    late = c.do(bob, C.SendText("after carol"))
    c.settle()
    carols = c.members[carol]
    assert carols.core.state.members == c.members[alice].core.state.members
    assert carols.texts.get(early.id) is None  # no history without share_history
    assert carols.texts[late.id] == "after carol"
