"""kith demo converges and says so."""

from __future__ import annotations

import io

from node.cli.demo import run_demo


async def test_demo_converges_with_the_offline_node_messages() -> None:
    out = io.StringIO()
    assert await run_demo(count=3, out=out, patience=30)
    text = out.getvalue()
    assert "carol loses the network" in text
    assert "verdict: all 3 nodes hold the same 9 messages in the same order" in text
    history = text.split("The history every node shows:")[1]
    assert "will this arrive?" in history and "(typing on the train, no network)" in history


async def test_demo_explains_its_fingerprints_and_never_repeats_a_row() -> None:
    out = io.StringIO()
    assert await run_demo(count=3, out=out, patience=30)
    text = out.getvalue()
    assert "a fingerprint of their order" in text
    rows = [line.split(None, 1)[1] for line in text.splitlines()
            if line.strip().startswith("converging...")]
    assert len(rows) == len(set(rows))  # each one shows a change
