"""A removed member cannot keep injecting content (issue 12, item 8).

Mallory is removed while cut off from the others; everything she makes after her cut-off
(back-dated so its clock leaves out the removal, which is indistinguishable from being
concurrent with it) is withdrawn: taken into the log so every node holds the same events,
but never decrypted, never stored with content, never shown, and capped.
"""

from __future__ import annotations

from node.group import commands as C
from node.group.bodies import Role
from node.group.member_io import Announce, EraseContent, Events, Received, SaveEvent, Warn
from node.group.state import MAX_BUFFER_BYTES_PER_AUTHOR, MAX_WITHDRAWN
from node.ids import short_id
from tests.group.cluster import Cluster
from tests.group.test_member_bad_input import feed, messages, scene, still_talking


def test_back_dated_events_of_a_removed_member_are_kept_without_content_and_capped() -> None:
    c, alice, bob, mallory = scene()
    c.partition([alice, bob], [mallory])
    c.do(alice, C.RemoveMember(mallory))
    c.settle()
    # mallory never hears of it and keeps talking: her events leave out the removal
    for i in range(MAX_WITHDRAWN + 40):
        c.do(mallory, C.SendText(f"injected {i}"))
    injected = [e for e in c.members[mallory].core.ordered() if e.author == mallory]
    assert len(injected) > MAX_WITHDRAWN + 40  # (her sender key first)
    victim = c.members[alice]
    effects = []
    for start in range(0, len(injected), 100):
        effects += feed(c, alice, mallory, *injected[start:start + 100])
    saves = [e for e in effects if isinstance(e, SaveEvent)]
    assert len(saves) == MAX_WITHDRAWN  # in the log, up to the cap...
    assert all(s.text is None and s.content is None for s in saves)  # ...without content
    assert all(victim.texts[s.event.id] is None for s in saves)
    assert not any(s.event.id in victim.contents for s in saves)
    assert not any(t and t.startswith("injected") for t in messages(c, alice))
    # past the cap: rejected, one line per message (not one per event)
    lines = [e.text for e in effects if isinstance(e, Warn) and "cut-off" in e.text]
    assert len(lines) == 1 and lines[0].endswith(
        f"more) from {short_id(mallory)}: its author departed: more than {MAX_WITHDRAWN} "
        "events past its cut-off")
    assert victim.core.frontier[mallory] == injected[MAX_WITHDRAWN - 1].seq
    still_talking(c, alice, bob)


def test_what_was_read_before_the_removal_was_known_is_erased_then() -> None:
    c, alice, bob, mallory = scene()
    c.partition([alice], [bob, mallory])
    removal = c.do(alice, C.RemoveMember(mallory))
    concurrent = c.do(mallory, C.SendText("said while being removed"))
    c.settle()
    reader = c.members[bob]
    assert reader.texts[concurrent.id] == "said while being removed"  # bob did not know yet
    effects = reader.handle(Received(alice, Events((removal,))), c.now)
    c.run(bob, effects)
    assert EraseContent(concurrent.id) in effects
    assert reader.texts[concurrent.id] is None and concurrent.id not in reader.contents
    assert c.disks[bob].texts[concurrent.id] is None
    assert "said while being removed" not in messages(c, bob)
    c.connect_all([alice, bob])
    still_talking(c, alice, bob)


def test_what_waits_for_its_causal_past_is_bounded_in_bytes() -> None:
    c, alice, bob, mallory = scene()
    c.partition([alice, bob], [mallory])
    for i in range(400):  # about 400 x 22 kB, her first withheld: none can be delivered
        c.do(mallory, C.SendText(f"{i} " + "y" * 16_000))
    hers = [e for e in c.members[mallory].core.ordered() if e.author == mallory]
    victim = c.members[alice].core
    for start in range(1, len(hers), 50):
        feed(c, alice, mallory, *hers[start:start + 50])
        assert victim.buffered_bytes <= MAX_BUFFER_BYTES_PER_AUTHOR
    assert victim.buffered_bytes > MAX_BUFFER_BYTES_PER_AUTHOR // 2
    c.connect_all()
    still_talking(c, alice, bob, mallory)  # what was dropped comes again by sync


def test_a_removal_that_loses_to_a_concurrent_leave_withdraws_nothing_in_the_end() -> None:
    """Found by the state machine: alice removes carol while carol's message and her LEAVE
    are in flight. Until the LEAVE arrives, the removal cuts carol off at 0 and her message
    is withdrawn (stored without content); the LEAVE comes first in the total order, so the
    removal has no effect and the message must be read then, sender key included."""
    c = Cluster(3, seed=0)
    alice, _bob, carol = c.ids
    for peer in c.ids[1:]:
        c.do(alice, C.AddMember(peer))
    c.connect_all()
    c.settle()
    said = c.do(carol, C.SendText("m1"))
    c.handle(carol, C.LeaveGroup())
    c.handle(alice, C.SendText("m2"))
    c.handle(alice, C.RemoveMember(carol))
    c.connect_all()
    for peer in c.ids:
        c.handle(peer, Announce())
    c.settle()
    assert not c.members[alice].core.is_withdrawn(carol, said.seq)
    assert [c.members[p].texts[said.id] for p in c.ids] == ["m1"] * 3
    assert c.disks[alice].texts[said.id] == "m1"


def test_a_member_whose_re_admission_was_voided_learns_it() -> None:
    """Found by the state machine: carol leaves; bob re-adds her while alice bans bob;
    alice leaves too. Bob's ADD of carol is withdrawn (bob was cut off), so carol is not
    a member, and the members owe her what shows it (bob's ban), not only what led to
    her own LEAVE: without it she believed she was back, alone."""
    c = Cluster(3, seed=1)
    alice, bob, carol = c.ids
    for peer in c.ids[1:]:
        c.do(alice, C.AddMember(peer))
    c.connect_all()
    c.settle()
    c.do(carol, C.LeaveGroup())
    c.connect_all()
    c.settle()
    c.handle(alice, C.BanMember(bob))
    c.handle(bob, C.AddMember(carol, Role.GUEST))
    c.handle(alice, C.LeaveGroup())
    c.connect_all()
    for peer in c.ids:
        c.handle(peer, Announce())
    c.settle()
    assert carol not in c.members[carol].core.state.members
    assert c.members[carol].core.state.members == c.members[bob].core.state.members or (
        bob not in c.members[bob].core.state.members)
