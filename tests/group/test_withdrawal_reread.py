"""A message read, then withdrawn by a removal, then not withdrawn after all (the
removed member's concurrent LEAVE came first) is read again: erasing it on
withdrawal forgot the content and its message key was already used ("message key
0 already used or too old"), so the receiver re-derives that chain from its own
kept SENDER_KEY copy (``Receiving.retake``).

Found by tests/group/test_member_machine.py (with the rule where two members
remove each other); reachable since pulled sync (e3b9361) changed the order in
which a member receives a partition's events.
"""

from __future__ import annotations

from node.group import commands as C
from node.group.member_io import Announce, Warn
from tests.group.cluster import Cluster


def test_a_message_withdrawn_then_restored_is_read_again() -> None:
    c = Cluster(4, seed=0)
    alice, bob, carol, dave = c.ids
    for peer in (bob, carol, dave):
        c.do(alice, C.AddMember(peer))
    c.connect_all()
    c.settle()
    c.restart(alice)  # alice is cut off from everyone from here on
    c.do(alice, C.SendText("alice, alone"))
    said = c.do(carol, C.SendText("carol's message"))
    c.connect_all([bob, carol, dave])
    c.settle()
    assert c.texts(dave)[said.id] == "carol's message"
    c.do(carol, C.LeaveGroup())  # concurrent with alice's removal of carol below
    c.disconnect(carol, bob)
    c.disconnect(carol, dave)
    c.do(alice, C.RemoveMember(carol))  # alice never saw carol's message: it withdraws it
    c.connect_all()
    for peer in c.ids:
        c.handle(peer, Announce())
    c.settle()
    assert carol not in c.members[dave].core.state.members
    assert not c.members[dave].core.is_withdrawn(carol, said.seq)  # the LEAVE came first
    assert c.texts(dave)[said.id] == "carol's message"  # so dave reads it


def test_the_chain_is_retaken_from_a_history_too() -> None:
    """A member handed an author's history (a shared-history group) can re-derive that
    chain from its start, not only from where its SENDER_KEY copy began."""
    c = Cluster(3, seed=1, share_history=True)
    alice, bob, carol = c.ids
    c.do(alice, C.AddMember(bob))
    c.connect_all()
    c.settle()
    said = c.do(bob, C.SendText("before carol"))
    c.do(alice, C.AddMember(carol))
    c.connect_all()
    c.settle()
    starts = c.members[carol].kept_starts(bob, said.epoch)
    assert sorted(s.index for s in starts) == [0, 1]  # the HISTORY's, the SENDER_KEY's
    assert c.texts(carol)[said.id] == "before carol"


def test_without_a_kept_copy_it_stays_unreadable_and_says_so() -> None:
    c = Cluster(3, seed=0)
    alice, bob, carol = c.ids
    for peer in (bob, carol):
        c.do(alice, C.AddMember(peer))
    c.connect_all()
    c.settle()
    said = c.do(bob, C.SendText("hi"))
    c.settle()
    reader = c.members[carol]
    reader.copies.clear()  # (as if they were lost)
    assert reader.retake(bob, said.epoch) == []
    assert any(isinstance(e, Warn) and "stay unreadable" in e.text for e in reader.out)
