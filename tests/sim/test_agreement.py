"""The simulator counts what real nodes count: encryptions, signatures, bytes per message.

Real nodes run in this process on 127.0.0.1 (as tests/integration does); the
author sends the same texts the simulator sends, after the same set-up events
(CREATE, one ADD per member, in a private group the first SENDER_KEY), so the
events have the same fields and the same encoded sizes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.api.python import Kith, open_node
from node.ids import parse_peer_id
from node.sim.runner import Simulation
from node.sim.scenario import Scenario, message_text

SOON = 10.0
SIZE = 200
MESSAGES = 3


@asynccontextmanager
async def mesh(tmp: Path, count: int) -> AsyncIterator[list[Kith]]:
    async with AsyncExitStack() as stack:
        nodes: list[Kith] = []
        for k in range(count):
            nodes.append(await stack.enter_async_context(
                open_node(tmp / f"n{k}", name=f"n{k}", peers=[n.listen for n in nodes])))
        with trio.fail_after(SOON):
            for a in nodes:
                for b in nodes:
                    if a is not b:
                        await a.wait_for_peer(b.peer_id)
        yield nodes


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize(("mode", "sim_mode"), [("private", "sender-keys"),
                                                ("pairwise", "pairwise")])
async def test_counts_and_bytes_agree_with_real_nodes(
    tmp_path: Path, n: int, mode: str, sim_mode: str
) -> None:
    async with mesh(tmp_path, n + 1) as nodes:
        service = nodes[0].service
        group = service.create("sim", mode)
        for other in nodes[1:]:
            service.add(group, parse_peer_id(other.peer_id))
        with trio.fail_after(SOON):
            for node in nodes:
                g = await node.group(group.id.hex())
                await node.service.wait_until(lambda g=g: len(g.core.state.members) == n + 1)
        real = []
        for i in range(MESSAGES):  # one at a time: a burst would go out merged (one
            real.append(service.send(group, message_text(i, SIZE)))  # message per peer),
            await service.committed()  # which the simulator does not model
        counters = [group.counters[event.id] for event in real]

    sim = Simulation(Scenario(n, sim_mode, messages=MESSAGES, size=SIZE))
    sim.run()
    assert len(sim.sent) == MESSAGES
    for event, counted, sent in zip(real, counters, sim.sent, strict=True):
        assert sent.event is not None
        assert (event.seq, event.lamport, len(event.raw)) == (
            sent.event.seq, sent.event.lamport, len(sent.event.raw))
        assert counted.encryptions == sent.counters.encryptions == (1 if mode == "private" else n)
        assert counted.signatures == sent.counters.signatures == 1
        assert counted.bytes_out == sent.counters.bytes_out > n * SIZE
