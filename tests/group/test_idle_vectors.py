"""A converged, idle group sends nothing (pure, socket-free, over simulated time).

The periodic beat (``Announce``) tells a member our vector only if it may lack
something; once a group has converged and is quiet, nobody may: the beat must send
nothing at all, however long it runs. (On real nodes the keepalives are the
channel's, not the member core's.) Members that departed are still connected and
still owed what led to their departure, but no more than that.
"""

from __future__ import annotations

from collections import Counter

from node.group import commands as C
from node.group.member_io import Announce, Effect, Received, Send, SendMany, Vector
from node.ids import PeerId
from tests.group.cluster import Cluster

BEAT = 30.0  # the driver's period


def _counting(c: Cluster) -> Counter[tuple[str, PeerId, PeerId]]:
    """Count every message the members send from now on, by (kind, from, to)."""
    sent: Counter[tuple[str, PeerId, PeerId]] = Counter()
    run = c.run

    def counted(peer: PeerId, effects: list[Effect]):  # type: ignore[no-untyped-def]
        for e in effects:
            if isinstance(e, Send):
                sent[(e.kind, peer, e.peer)] += 1
            elif isinstance(e, SendMany):
                for to in e.peers:
                    sent[(e.kind, peer, to)] += 1
        return run(peer, effects)

    c.run = counted  # type: ignore[method-assign]
    return sent


def _beats(c: Cluster, minutes: float) -> None:
    for _ in range(int(minutes * 60 / BEAT)):
        c.now += BEAT
        for p in c.ids:
            c.handle(p, Announce())
        c.settle()


def _removed_group(n: int = 8, removed: int = 2) -> tuple[Cluster, list[PeerId]]:
    """A group that talked, removed some members (still connected), and talked on."""
    c = Cluster(n)
    owner = c.ids[0]
    for p in c.ids[1:]:
        c.do(owner, C.AddMember(p))
    c.connect_all()
    c.settle()
    for p in c.ids:
        c.do(p, C.SendText("before"))
    c.settle()
    gone = c.ids[1:1 + removed]
    for p in gone:
        c.do(owner, C.RemoveMember(p))
    c.settle()
    for p in c.ids[1 + removed:]:
        c.do(p, C.SendText("after"))
    c.settle()
    _beats(c, 2)  # the first exchanges after the traffic: everyone learns the vectors
    return c, gone


def test_a_converged_idle_group_sends_nothing_for_an_hour() -> None:
    c, _gone = _removed_group()
    sent = _counting(c)
    _beats(c, 60)
    assert sent == Counter()


def test_a_removed_member_is_still_told_what_led_to_its_removal() -> None:
    """It reconnects having missed its own removal: it is told, pulls, and gets it;
    then, with its vector covering all it is owed, it is told nothing more."""
    c = Cluster(4)
    owner, bob, carol, dave = c.ids
    for p in (bob, carol, dave):
        c.do(owner, C.AddMember(p))
    c.connect_all()
    c.settle()
    c.partition([owner, carol, dave], [bob])
    removal = c.do(owner, C.RemoveMember(bob))
    c.do(carol, C.SendText("not for bob"))
    c.settle()
    c.connect_all()
    c.settle()
    assert removal.id in {e.id for e in c.members[bob].core.ordered()}
    assert bob not in c.members[owner].core.state.members
    _beats(c, 2)  # the first exchanges after the heal
    sent = _counting(c)
    _beats(c, 30)
    assert [k for k in sent if bob in k[1:]] == []
    # a stale vector from bob (as after his restart) is answered: he may lack his removal
    before = tuple((a, n) for a, n in c.members[bob].vector() if a != owner)
    effects = c.members[carol].handle(Received(bob, Vector(before, False)), c.now + 1)
    assert any(isinstance(e, Send) and e.peer == bob for e in effects)
