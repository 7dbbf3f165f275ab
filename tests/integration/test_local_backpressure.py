"""A local burst of sends never drops a peer: the API waits for room (issue 12, item 12).

A channel drops a peer whose queue holds ``send_queue`` messages. A script that calls
``send`` 300 times without yielding (the Python API) or pipelines 300 ``send``
requests on the control socket used to fill the queue of every peer and drop them
all. Now the messages of local commands wait for room (``node.service.outbox``):
every message arrives, in order, over the very channel that was up before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from node.api.python import Kith, open_node

SOON = 20.0
COUNT = 300


@asynccontextmanager
async def pair(tmp: Path) -> AsyncIterator[tuple[Kith, Kith, str]]:
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(open_node(tmp / "alice", name="alice"))
        bob = await stack.enter_async_context(
            open_node(tmp / "bob", name="bob", peers=[alice.listen]))
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
            await bob.wait_for_peer(alice.peer_id)
            group = alice.create_group("burst")
            alice.add(group, bob.peer_id)
            g = await bob.group(group)
            await bob.service.wait_until(lambda: len(g.core.state.members) == 2)
        yield alice, bob, group


def texts(node: Kith, group: str) -> list[str]:
    return [str(e["text"]) for e in node.log(group) if e["kind"] == "message"]


async def test_300_sends_without_yielding_reach_the_peer_and_drop_nobody(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alice, bob, group):
        channels = (alice.node.connections[bob.node.peer_id],
                    bob.node.connections[alice.node.peer_id])
        sent = [f"m{i}" for i in range(COUNT)]
        for text in sent:  # no await: the queue's sender task never runs in between
            alice.send(group, text)
        queued = alice.node.connections[bob.node.peer_id].queued()
        assert queued <= alice.node.config.send_queue // 2 < COUNT
        with trio.fail_after(SOON):
            await bob.service.wait_until(lambda: len(texts(bob, group)) >= COUNT)
        assert texts(bob, group) == sent
        assert (alice.node.connections.get(bob.node.peer_id),
                bob.node.connections.get(alice.node.peer_id)) == channels


async def test_300_pipelined_control_socket_sends_reach_the_peer_and_drop_nobody(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alice, bob, group):
        channel = alice.node.connections[bob.node.peer_id]
        sent = [f"c{i}" for i in range(COUNT)]
        requests = b"".join(json.dumps({"op": "send", "group": group, "text": t}).encode()
                            + b"\n" for t in sent)
        answers: list[dict[str, object]] = []
        with trio.fail_after(SOON):
            stream = await trio.open_unix_socket(str(alice.app.data_dir.control_socket))
            async with stream:
                await stream.send_all(requests)  # all at once: the node reads them in a row
                buf = b""
                while len(answers) < COUNT:
                    data = await stream.receive_some()
                    assert data, "the node closed the control connection"
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    answers += [json.loads(line) for line in lines]
            assert all(a["ok"] for a in answers), [a for a in answers if not a["ok"]][:1]
            await bob.service.wait_until(lambda: len(texts(bob, group)) >= COUNT)
        assert texts(bob, group) == sent
        assert alice.node.connections.get(bob.node.peer_id) is channel
