"""A node restored from an old copy of its data directory never reuses a seq or a message
key, and is told when another copy of it forked its history (issue 12, item 9).

Bob's ``Disk`` is copied (the backup), bob goes on talking, then bob is restarted from the
copy: his store is behind what alice holds of him.
"""

from __future__ import annotations

import copy

from node.group import commands as C
from node.group.bodies import PrivateMessage, decode_body
from node.group.events import Kind
from node.group.member_io import Announce, PeerUp, Refused, SaveEvent, Warn
from node.ids import PeerId
from tests.group.cluster import Cluster
from tests.group.test_member_bad_input import scene


def restore_backup(c: Cluster, bob: PeerId, talk: int) -> None:
    backup = copy.deepcopy(c.disks[bob])
    for i in range(talk):
        c.do(bob, C.SendText(f"after the backup {i}"))
    c.settle()
    c.disks[bob] = backup
    c.restart(bob)


def indices(c: Cluster, peer: PeerId, author: PeerId) -> list[tuple[int, int]]:
    """(epoch, chain index) of every private message of ``author`` that ``peer`` holds."""
    out = []
    for e in c.members[peer].core.ordered():
        if e.author == author and e.kind is Kind.MESSAGE:
            body = decode_body(Kind.MESSAGE, e.body, mode="private")
            assert isinstance(body, PrivateMessage)
            out.append((e.epoch, body.index))
    return out


def warned(c: Cluster, peer: PeerId, words: str) -> list[str]:
    return [w.text for w in c.warnings[peer] if isinstance(w, Warn) and words in w.text]


def test_a_restored_node_gets_its_own_events_back_first_then_uses_a_fresh_key() -> None:
    c, alice, bob, mallory = scene()
    before = indices(c, alice, bob)
    restore_backup(c, bob, talk=5)
    restored = c.members[bob]
    assert restored.core.frontier[bob] < c.members[alice].core.frontier[bob]
    # mallory (who did not add bob, so owes him no history) shows him her vector first
    c.links.add(frozenset((mallory, bob)))
    c.handle(bob, PeerUp(mallory))
    c.handle(mallory, PeerUp(bob))
    while c.transfer(mallory, bob):
        pass
    assert restored.core.frontier[bob] < c.members[mallory].core.frontier[bob]
    # bob must not author until he has his own events back: it would reuse a seq
    effects = restored.handle(C.SendText("too early"), c.now)
    refused = [e.reason for e in effects if isinstance(e, Refused)]
    assert len(refused) == 1 and "restored backup" in refused[0]
    assert not [e for e in effects if isinstance(e, SaveEvent)]
    c.settle()  # his vector back to her, her session to him
    assert restored.core.frontier[bob] == c.members[mallory].core.frontier[bob]
    assert warned(c, bob, "came back from")
    # his next message: a fresh epoch past every one used, never a chain index used before
    c.connect_all()
    c.settle()
    said = c.do(bob, C.SendText("after the restore"))
    c.settle()
    assert c.members[alice].texts[said.id] == "after the restore"
    used = indices(c, alice, bob)
    assert len(used) == len(set(used)) == len(before) + 6
    assert said.epoch > max(e for e, _ in used[:-1])
    assert c.members[alice].equivocated == set()


def test_a_restored_node_that_speaks_before_meeting_anyone_is_told_of_the_fork() -> None:
    c, alice, bob, _mallory = scene()
    backup = copy.deepcopy(c.disks[bob])
    first = c.do(bob, C.SendText("first copy"))
    c.settle()
    assert c.members[alice].texts[first.id] == "first copy"
    c.disks[bob] = backup
    c.restart(bob)  # (restart leaves him cut off from everyone)
    second = c.do(bob, C.SendText("second copy"))  # offline: nobody could tell him
    assert second.seq == first.seq and second.id != first.id  # a fork
    c.connect_all()
    c.settle()
    for p in c.ids:
        c.handle(p, Announce())
    c.settle()
    # alice (or mallory) saw both: recorded once, and bob was told
    assert any(bob == a for a, _ in c.members[alice].equivocated)
    assert warned(c, bob, "another copy of this")
    # his next message uses a fresh sender key and is read everywhere
    said = c.do(bob, C.SendText("after the fork"))
    c.settle()
    assert c.members[alice].texts.get(said.id) == "after the fork"
