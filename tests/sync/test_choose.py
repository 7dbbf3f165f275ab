"""Whom a lagging member asks (node.sync.choose)."""

from __future__ import annotations

from node.ids import PeerId
from node.sync.choose import choose, coverage, covers, nudge_order

A, B, C, ME = (PeerId(bytes([i]) * 32) for i in (1, 2, 3, 9))


def test_coverage_counts_the_events_we_lack() -> None:
    assert coverage({A: 3}, {A: 5, B: 2}) == 4
    assert coverage({A: 5}, {A: 3}) == 0
    assert covers({A: 5, B: 1}, {A: 5}) and not covers({A: 4}, {A: 5})


def test_the_member_holding_the_most_of_what_we_lack_is_chosen() -> None:
    assert choose(ME, {A: 1}, {B: {A: 3}, C: {A: 9}}) == C
    assert choose(ME, {A: 9}, {B: {A: 3}, C: {A: 9}}) is None  # we lack nothing
    assert choose(ME, {}, {}) is None


def test_among_equals_the_author_of_what_we_lack_is_chosen() -> None:
    for x, y in ((B, C), (C, B)):
        assert choose(ME, {}, {x: {A: 4}, A: {A: 4}, y: {A: 4}}) == A


def test_ties_spread_over_the_candidates_deterministically() -> None:
    candidates = {PeerId(bytes([i]) * 32): {A: 4} for i in range(10, 20)}
    picks = {choose(PeerId(bytes([k]) * 32), {}, candidates) for k in range(100, 140)}
    assert len(picks) > 3  # not everyone asks the same one
    assert choose(ME, {}, candidates) == choose(ME, {}, dict(reversed(candidates.items())))
    assert nudge_order(ME, [A, B, C], 1) == nudge_order(ME, [C, B, A], 1)
    assert sorted(nudge_order(ME, [A, B, C], 2)) == sorted([A, B, C])
