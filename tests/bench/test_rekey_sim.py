"""The simulated removal (node/bench/rekey_sim.py): every author rotates once, and a
rotation's bytes grow linearly with N (each member gets the event and only its own copy)."""

from __future__ import annotations

from node.bench.rekey_sim import measure


def test_a_rotation_costs_bytes_linear_in_n() -> None:
    small, large = measure(10, 3, seed=1), measure(40, 3, seed=1)
    assert small["rotations"] == large["rotations"] == 3
    ratio = large["bytes_per_rotation"] / small["bytes_per_rotation"]
    assert 3.0 < ratio < 5.0  # 4x the members, about 4x the bytes (not 16x)
    assert large["removal_bytes"] == round(large["bytes_per_rotation"] * 40)
