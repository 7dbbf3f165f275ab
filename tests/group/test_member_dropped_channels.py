"""The ``kith bench scale`` scenario in the pure core, with channels that drop.

A join, a removal while everyone sends, a partition with both halves sending,
a heal; meanwhile a channel now and then drops with whatever was in flight and
is dialled again (a slow member's full queue drops the peer: docs/protocol.md
section 14). Every remaining member must end up reading every message it is
entitled to: at N = 64 and 100 real nodes, before the fix, a few could not
read round-2 messages, because a member said ``unread`` and its author pushed
the key only once, and that push was lost with its channel.
"""

from __future__ import annotations

import random

import pytest

from node.group import commands as C
from node.group.events import Event
from node.ids import PeerId
from tests.group.cluster import Cluster


def dropping(c: Cluster, rng: random.Random, rate: float) -> None:
    """Make ``c.transfer`` drop the channel (losing what is in flight both ways, then
    dialling again) instead of delivering, with probability ``rate``."""
    deliver = c.transfer

    def transfer(src: PeerId, dst: PeerId) -> bool:
        if c.flight.get((src, dst)) and rng.random() < rate:
            c.disconnect(src, dst)
            c.connect(src, dst)
            return True
        return deliver(src, dst)

    c.transfer = transfer  # type: ignore[method-assign]


@pytest.mark.parametrize("seed", [0, 1])
def test_join_removal_partition_heal_with_dropped_channels(seed: int) -> None:
    n = 16
    c = Cluster(n, seed=seed)
    deliver = c.transfer
    joiners, first = c.ids[-2:], c.ids[:-2]
    removed = first[1:3]
    remaining = [p for p in c.ids if p not in removed]
    for p in first[1:]:
        c.do(first[0], C.AddMember(p))
    c.connect_all()
    c.settle()
    for p in first:
        c.do(p, C.SendText("warm-up"))
    c.settle()
    dropping(c, random.Random(seed), 0.15)
    for p in joiners:
        c.do(first[0], C.AddMember(p))
    for p in first:
        c.do(p, C.SendText("round 1"))
    c.settle()
    for p in removed:
        c.do(first[0], C.RemoveMember(p))
    owed: list[tuple[PeerId, Event]] = []
    for p in remaining:  # each author's first message after the join, while the removal
        owed.append((p, c.do(p, C.SendText("round 2"))))  # spreads
        for key in list(c.flight)[:5]:
            c.transfer(*key)
    c.settle()
    c.transfer = deliver  # type: ignore[method-assign]
    half = len(remaining) // 2
    c.partition(remaining[:half] + removed, remaining[half:])
    for p in remaining:
        owed.append((p, c.do(p, C.SendText("round 3"))))
    c.settle()
    c.connect_all()
    c.settle()
    for p in remaining:
        owed.append((p, c.do(p, C.SendText("round 4"))))
    c.settle()
    assert len({tuple(c.order(m)) for m in remaining}) == 1
    unread = [(c.ids.index(m), c.ids.index(a)) for m in remaining for a, said in owed
              if a != m and c.members[m].texts.get(said.id) is None]
    assert unread == []
    after = owed[len(remaining):]  # rounds 3 and 4 (round 2 may precede the removal)
    for r in removed:  # nothing after its removal
        assert all(c.members[r].texts.get(said.id) is None for _, said in after)
