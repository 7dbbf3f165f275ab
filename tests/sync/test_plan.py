"""The sync planner over replicas of the real group core: any partitions, any order.

Replicas author events while cut into random partitions; "meetings" run the
planner both ways (each sends the other exactly what its vector lacks, in
storage order, in bounded batches). After the partitions heal (a final round
of meetings along any connected chain) every replica holds the same events in
the same order, nothing was sent that the receiver had, and everything sent
was deliverable on arrival (no buffering).
"""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.group.bodies import Add, Role
from node.group.events import Event
from node.group.state import Delivered, Duplicate
from node.sync.plan import Batcher, behind, missing
from node.testing.groups import Replica

KEYS = [IdentityKey(bytes([i]) * 32) for i in range(40, 46)]


def founded(n: int) -> list[Replica]:
    owner, create = Replica.founding(KEYS[0], mode="pairwise")
    history = [create, *(owner.author(Add(k.peer_id, Role.MEMBER, "")) for k in KEYS[1:n])]
    replicas = [owner]
    for key in KEYS[1:n]:
        r = Replica(key, owner.core.group_id)
        r.receive(*history)
        replicas.append(r)
    return replicas


def meet(a: Replica, b: Replica, batch: int) -> int:
    """a sends b what b lacks, in bounded batches; returns how many events were sent."""
    sent = 0
    batcher: Batcher[Event] = Batcher(batch, 10**9)
    stream = missing(a.core.delivered_order(), b.core.frontier)
    for event in stream:
        full = batcher.add(event, len(event.raw))
        for e in full or []:
            effects = b.core.receive(e)
            assert isinstance(effects[0], Delivered), effects  # deliverable on arrival
            sent += 1
    for e in batcher.flush() or []:
        assert isinstance(b.core.receive(e)[0], Delivered)
        sent += 1
    return sent


@settings(max_examples=60)
@given(seed=st.integers(0, 100_000), batch=st.integers(1, 7))
def test_random_partitions_heal_to_one_history(seed: int, batch: int) -> None:
    rng = random.Random(seed)
    replicas = founded(5)
    for _ in range(rng.randrange(2, 6)):  # epochs of partitioned chatter
        cut = rng.randrange(1, len(replicas))
        order = rng.sample(replicas, len(replicas))
        halves = [order[:cut], order[cut:]]
        for _ in range(rng.randrange(1, 8)):
            r = rng.choice(replicas)
            r.say(f"{r.peer_id.hex()[:4]}")
            half = next(h for h in halves if r in h)
            if len(half) > 1:
                meet(r, rng.choice([x for x in half if x is not r]), batch)
    # heal: meetings along a chain, then back, reach everyone
    chain = [*itertools.pairwise(replicas), *itertools.pairwise(reversed(replicas))]
    for a, b in chain:
        meet(a, b, batch)
        meet(b, a, batch)
    orders = [[e.id for e in r.core.ordered()] for r in replicas]
    assert all(o == orders[0] for o in orders)
    assert not any(behind(a.core.frontier, b.core.frontier) for a in replicas for b in replicas)
    assert all(meet(a, b, batch) == 0 for a in replicas for b in replicas if a is not b)


def test_nothing_the_receiver_has_is_sent_and_a_replay_is_harmless() -> None:
    a, b = founded(2)
    for i in range(5):
        a.say(f"m{i}")
    assert meet(a, b, 2) == 5
    assert list(missing(a.core.delivered_order(), b.core.frontier)) == []
    for e in a.core.delivered_order():
        assert isinstance(b.core.receive(e)[0], Duplicate)


def test_batcher_bounds_events_and_bytes() -> None:
    batcher: Batcher[int] = Batcher(3, 100)
    out = [b for i in range(10) if (b := batcher.add(i, 40)) is not None]
    assert out == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # 3 events (120 B would pass 100 anyway)
    assert batcher.flush() == [9] and batcher.flush() is None
    big: Batcher[str] = Batcher(100, 100)
    assert big.add("x", 60) is None and big.add("y", 60) == ["x", "y"]
