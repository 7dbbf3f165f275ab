"""Counts and bytes on tiny groups, against values worked out by hand."""

from __future__ import annotations

import pytest

from node.sim.metrics import measure
from node.sim.runner import Simulation
from node.sim.scenario import Scenario

SIZE = 256

# One private MESSAGE event with a 256-byte text and one-byte seq/lamport/index
# (msgpack, shortest forms):
#   array header 1, format 1, group 2+32, author 2+32, seq 1, epoch 1, clock [] 1,
#   lamport 1, kind 1, body bin16 3 + body, signature 2+64
# body = array 1, index 1, bin16 3 + ciphertext (the nonce-free form: no nonce, no keys)
# ciphertext = plaintext + tag 16, plaintext = map 1, "text" 5, str16 3 + 256 = 265
# (a pairwise copy, below, is nonce 24 + the same)
PRIVATE_BLOB = 24 + (1 + 5 + 3 + SIZE) + 16
PRIVATE_BODY = 1 + 1 + 3 + PRIVATE_BLOB - 24
PRIVATE_EVENT = 1 + 1 + 34 + 34 + 1 + 1 + 1 + 1 + 1 + 3 + PRIVATE_BODY + 66
# Pairwise: body = map 1, "salt" 5, bin8 2+16, "commit" 7, bin8 2+32, in a bin8 (2).
PAIRWISE_BODY = 1 + 5 + 18 + 7 + 34
PAIRWISE_EVENT = 1 + 1 + 34 + 34 + 1 + 1 + 1 + 1 + 1 + 2 + PAIRWISE_BODY + 66
# The events message around it: map 1, "t" 2, "events" 7, "g" 2+32, "evc" 4 + list; "cp"
# 3 + list only when there are copies, "sync" never (false is left out). Each event travels
# in its compact form, without its group (2+32 bytes less).
WRAPPER = 1 + 2 + 7 + 2 + 34 + 4
COMPACT = 34


def run(n: int, mode: str, **kw: object) -> dict[str, float]:
    sim = Simulation(Scenario(n, mode, messages=3, size=SIZE, **kw))  # type: ignore[arg-type]
    sim.run()
    return measure(sim)


@pytest.mark.parametrize("n", [2, 3])
def test_private_message_costs_one_encryption_one_signature_and_a_copy_each(n: int) -> None:
    assert PRIVATE_EVENT == SIZE + 174  # 203 with the nonce and the map of keys
    per_copy = WRAPPER + (1 + 3 + PRIVATE_EVENT - COMPACT)  # evc: [bin16 compact event]
    r = run(n, "sender-keys")
    assert r["encryptions_per_message"] == 1
    assert r["signatures_per_message"] == 1
    assert r["event_overhead_bytes"] == PRIVATE_EVENT - SIZE
    assert r["bytes_per_message"] == n * per_copy
    assert r["envelope_bytes_per_event"] == per_copy - SIZE
    assert r["verifications_per_message"] == n  # each receiver checks the signature once
    assert r["undelivered"] == 0


@pytest.mark.parametrize("n", [2, 3])
def test_pairwise_message_costs_an_encryption_per_member(n: int) -> None:
    copy = PRIVATE_BLOB  # the same nonce || ciphertext || tag, per member
    entry = 1 + 34 + 3 + copy  # [event id, bin16 copy]
    per_copy = WRAPPER + (1 + 2 + PAIRWISE_EVENT - COMPACT) + 3 + (1 + entry)
    r = run(n, "pairwise")
    assert r["encryptions_per_message"] == n
    assert r["signatures_per_message"] == 1
    assert r["bytes_per_message"] == n * per_copy
    assert r["event_overhead_bytes"] == PAIRWISE_EVENT - SIZE


def test_raw_is_the_payload_and_a_length_prefix_per_member() -> None:
    r = run(3, "raw")
    assert r["bytes_per_message"] == 3 * (4 + SIZE)
    assert r["encryptions_per_message"] == r["signatures_per_message"] == 0


def test_envelope_does_not_grow_with_the_group() -> None:
    # Same integer widths (seq and lamport below 128) at both sizes: the same envelope.
    small, large = run(5, "sender-keys"), run(50, "sender-keys")
    assert small["envelope_bytes_per_event"] == large["envelope_bytes_per_event"]
    assert large["bytes_per_message"] == 10 * small["bytes_per_message"]


def test_delivery_time_is_the_uplink_queue_plus_latency() -> None:
    # Unlimited bandwidth: every copy arrives one latency after it was sent.
    r = run(4, "raw", latency=0.01, bandwidth=None)
    assert r["latency_p50_ms"] == pytest.approx(10.0)
    assert r["latency_p99_ms"] == pytest.approx(10.0)
    # 8 Mbit/s: each 260-byte copy takes 0.26 ms; 3 messages x 4 copies queue up.
    r = run(4, "raw", latency=0.01, bandwidth=8e6)
    assert r["latency_p50_ms"] == pytest.approx(10 + 0.26 * 6)
    assert r["latency_p99_ms"] == pytest.approx(10 + 0.26 * 12)
    assert r["messages_per_s"] == pytest.approx(3 / (0.01 + 0.26e-3 * 12))
