"""Members join and leave mid-conversation: real ADD/REMOVE events, lazy sender-key rotation."""

from __future__ import annotations

import pytest

from node.group.bodies import SenderKey, decode_body
from node.group.events import Kind
from node.sim.metrics import measure
from node.sim.runner import Simulation
from node.sim.scenario import Scenario

CHURN = dict(messages=30, size=64, authors=2, duration=3.0, churn=3.0, seed=4)


@pytest.fixture(scope="module", params=["sender-keys", "pairwise"])
def churned(request: pytest.FixtureRequest) -> Simulation:
    sim = Simulation(Scenario(12, request.param, **CHURN))  # type: ignore[arg-type]
    sim.run()
    assert sim.removed and sim.joined, "the seed must give both a join and a departure"
    return sim


def test_a_removed_member_gets_nothing_said_after_its_removal(churned: Simulation) -> None:
    for victim, removed_at in churned.removed.items():
        member = churned.members[victim]
        later = {s.event.id for s in churned.sent if s.event is not None and s.at > removed_at}
        assert later, "messages must follow the removal"
        assert not later & set(member.read_at)
        assert not later & {e.id for e in member.core.ordered()}
        assert victim not in {d for s in churned.sent if s.at > removed_at for d in s.audience}
        assert victim not in member.core.state.members  # it was told


def test_newcomers_read_what_is_said_once_they_are_in(churned: Simulation) -> None:
    final = set(churned.current_members())
    for newcomer, joined_at in churned.joined.items():
        if newcomer not in final:
            continue
        read = churned.members[newcomer].read_at
        after = [s for s in churned.sent if s.event is not None and s.at > joined_at + 0.1]
        assert after and all(s.event is not None and s.event.id in read for s in after)


def test_everyone_left_agrees_on_the_order(churned: Simulation) -> None:
    orders = churned.orders()
    assert len(orders) > 1 and all(orders.values()), "several members, each with events"
    assert len({tuple(order) for order in orders.values()}) == 1
    assert measure(churned)["undelivered"] == 0


def test_a_departure_makes_each_author_rotate_before_it_speaks_again() -> None:
    sim = Simulation(Scenario(12, "sender-keys", **CHURN))  # type: ignore[arg-type]
    sim.run()
    r = measure(sim)
    author = sim.members[sim.authors[0]]
    assert author.keys.own is not None and author.keys.own.epoch >= 1  # rotated
    keys = [decode_body(Kind.SENDER_KEY, e.body) for e in author.core.ordered()
            if e.kind is Kind.SENDER_KEY and e.author == author.me]
    assert len(keys) > author.keys.own.epoch  # at least one per epoch
    assert all(isinstance(k, SenderKey) for k in keys)
    newest = [k for k in keys if isinstance(k, SenderKey)][-1]
    assert not {p for p, _ in newest.keys} & set(sim.removed)  # never sealed to the departed
    # Rotations seal to everyone; hand-outs to newcomers seal to one each.
    assert r["rekey_seals"] > r["rekey_events"] and r["rekey_bytes"] > 0
    assert r["departures"] == len(sim.removed) and r["joins"] == len(sim.joined)


def test_a_copied_core_evolves_on_its_own() -> None:
    sim = Simulation(Scenario(4, "sender-keys", messages=2, size=64))
    sim.setup()
    founder = sim.members[sim.authors[0]].core
    other = sim.members[sim.order[2]].core
    assert [e.id for e in other.ordered()] == [e.id for e in founder.ordered()]
    assert other.frontier == founder.frontier and other.state.members == founder.state.members
    copy = founder.copy()
    sim.run()  # everyone receives two more messages; the copy receives nothing
    assert len(founder.ordered()) == len(copy.ordered()) + 2
    assert copy.frontier != founder.frontier
