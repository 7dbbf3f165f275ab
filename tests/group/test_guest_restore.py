"""A member demoted to guest concurrently with a ban it authored: the ban is void
(the demotion comes first in the fold), so the banned member is restored
(docs/protocol.md section 13), and it must read what the now-guest sent under
the sender key it started while the ban stood. A guest may author no SENDER_KEY
or HISTORY, so it hands the restored member a fresh sealed copy of its existing
epoch-start SENDER_KEY events instead (a copy travels beside an event; no event
is authored)."""

from __future__ import annotations

import pytest

from node.group import commands as C
from node.group.bodies import Role
from node.group.events import Kind
from tests.group.cluster import Cluster


@pytest.mark.parametrize("seed", range(3))
def test_a_guest_whose_ban_was_voided_gives_the_restored_member_its_keys(seed: int) -> None:
    c = Cluster(3, seed=seed)
    alice, bob, carol = c.ids
    c.do(alice, C.AddMember(bob, Role.ADMIN))
    c.do(alice, C.AddMember(carol))
    c.connect_all()
    c.settle()
    for p in c.ids:
        c.do(p, C.SendText(f"hello from {p.hex()[:4]}"))
    c.settle()
    c.partition([alice], [bob], [carol])
    c.do(bob, C.SendText("bob, alone"))  # (bob's ban comes later in the order)
    c.do(bob, C.SendText("bob, alone again"))
    ban = c.do(bob, C.BanMember(carol))
    during = c.do(bob, C.SendText("bob, after the ban"))  # a new epoch, without carol
    demote = c.do(alice, C.SetMemberRole(bob, Role.GUEST))
    assert demote.order_key < ban.order_key
    assert any(e.kind is Kind.SENDER_KEY and e.epoch == during.epoch
               for e in c.members[bob].core.ordered_view() if e.author == bob)
    c.connect_all()
    c.settle()
    for p in c.ids:
        state = c.members[p].core.state
        assert carol in state.members and state.role(bob) is Role.GUEST, p.hex()[:4]
    restored = [w.text for w in c.warnings[bob] if "is a member after all" in w.text]
    assert restored, "bob, a guest now, still restores carol"
    for reader in (alice, carol):
        assert c.texts(reader)[during.id] == "bob, after the ban", reader.hex()[:4]
    bobs = c.members[bob].keys.own
    assert bobs is not None and bobs.epoch == during.epoch and carol in bobs.recipients, (
        "carol holds bob's current chain now: bob must rotate if she leaves")


def test_a_member_that_left_since_gives_the_restored_member_its_keys() -> None:
    """Found by the state machine: alice, on carol's side, saw bob removed, rotated
    without him, wrote, and left; bob's removal of carol comes first in the fold, so
    bob is restored, and alice (no longer a member) still owes him that epoch."""
    c = Cluster(3, seed=2)
    alice, bob, carol = c.ids
    c.do(alice, C.AddMember(bob, Role.ADMIN))
    c.do(alice, C.AddMember(carol, Role.ADMIN))
    c.connect_all()
    c.settle()
    c.partition([alice, carol], [bob])
    bob_removes = c.do(bob, C.RemoveMember(carol))
    carol_removes = c.do(carol, C.RemoveMember(bob))
    assert bob_removes.order_key < carol_removes.order_key  # (seed 2: bob's wins)
    c.settle()
    during = c.do(alice, C.SendText("alice, without bob"))  # a new epoch, without bob
    c.do(alice, C.LeaveGroup())
    c.connect_all()
    c.settle()
    for p in c.ids:
        assert set(c.members[p].core.state.members) == {bob}, p.hex()[:4]
    assert not c.members[bob].core.is_withdrawn(alice, during.seq)
    assert c.texts(bob)[during.id] == "alice, without bob"
