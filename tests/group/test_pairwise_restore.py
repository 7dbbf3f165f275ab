"""A pairwise member kept after conflicting removals is given fresh copies (issue 11).

In a pairwise group there are no sender keys to hand over: each message is
encrypted for each recipient the author believed a member. A member that looked
removed to some during a partition, and stays once the conflicting removals
resolve, gets from each author a fresh copy of that author's messages it was
owed (docs/protocol.md section 13, "Restoring a member").
"""

from __future__ import annotations

import pytest

from node.group import commands as C
from node.group import pairwise_restore
from node.group.bodies import Role
from node.group.events import Event
from node.ids import PeerId
from tests.group.cluster import Cluster


def conflict(seed: int) -> tuple[Cluster, list[Event], PeerId]:
    """bob and carol (admins) remove each other in a partition; everyone talks."""
    c = Cluster(4, "pairwise", seed=seed)
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
    c.do(bob, C.RemoveMember(carol))
    c.do(carol, C.RemoveMember(bob))
    c.settle()
    during = [c.do(alice, C.SendText("alice during")), c.do(bob, C.SendText("bob during")),
              c.do(carol, C.SendText("carol during")), c.do(dave, C.SendText("dave during"))]
    c.settle()
    c.connect_all()
    c.settle()
    final = c.members[alice].core.state.members
    [kept] = [p for p in (bob, carol) if p in final]
    return c, during, kept


def event_text(c: Cluster, event: Event) -> str | None:
    """What the author itself reads in ``event``."""
    return c.members[event.author].texts.get(event.id)


@pytest.mark.parametrize("seed", range(4))
def test_the_kept_member_reads_every_message_of_the_partition(seed: int) -> None:
    c, during, kept = conflict(seed)
    final = c.members[c.ids[0]].core.state.members
    assert all(c.members[p].core.state.members == final for p in c.ids)
    for reader in [p for p in c.ids if p in final]:
        for event in during:
            if event.author in final:
                assert c.members[reader].texts.get(event.id) == f"{event_text(c, event)}", (
                    reader.hex()[:4], event.author.hex()[:4])
    # each copy was persisted by its author, so a restart keeps it readable
    for author in final:
        c.restart(author)
    c.connect_all()
    c.settle()
    for event in during:
        if event.author in final and event.author != kept:
            assert c.members[kept].texts.get(event.id) is not None


def test_the_copies_are_persisted_by_their_author_and_only_for_what_was_missing() -> None:
    c, during, kept = conflict(0)
    final = c.members[c.ids[0]].core.state.members
    for author in final:
        if author == kept:
            continue
        copies = c.disks[author].copies
        mine = [e for e in during if e.author == author]
        assert all((e.id, kept) in copies for e in mine)  # on disk: a restart resends them
        hello = [e for e in c.members[author].core.ordered()
                 if e.author == author and c.members[author].texts.get(e.id, "") and
                 str(c.members[author].texts[e.id]).startswith("hello")]
        assert hello and all((e.id, kept) in copies for e in hello)  # the original copies


def test_a_restore_re_encrypts_at_most_the_bound_and_never_a_deleted_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairwise_restore, "MAX_RESTORED", 1)
    c = Cluster(4, "pairwise", seed=1)
    alice, bob, carol, dave = c.ids
    c.do(alice, C.AddMember(bob, Role.ADMIN))
    c.do(alice, C.AddMember(carol, Role.ADMIN))
    c.do(alice, C.AddMember(dave))
    c.connect_all()
    c.settle()
    c.partition([alice, bob], [carol, dave])
    c.do(bob, C.RemoveMember(carol))
    c.do(carol, C.RemoveMember(bob))
    c.settle()
    first, doomed, last = (c.do(alice, C.SendText(t)) for t in ("first", "doomed", "last"))
    c.do(alice, C.DeleteMessage(doomed.id))
    c.settle()
    c.connect_all()
    c.settle()
    final = c.members[alice].core.state.members
    [kept] = [p for p in (bob, carol) if p in final]
    assert kept == carol  # (with this seed: carol looked removed to alice, and stays)
    reader = c.members[kept]
    assert reader.texts.get(last.id) == "last"  # the most recent, within the bound
    assert reader.texts.get(first.id) is None  # beyond the bound (1 here)
    assert reader.texts.get(doomed.id) is None and (doomed.id, kept) not in c.disks[alice].copies
