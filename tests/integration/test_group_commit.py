"""Group commit on real nodes: a burst costs a few transactions, and nothing leaves unstored.

Two real nodes in one process (loopback TCP, Noise, SQLite files). Alice authors a
burst without yielding (as a script on the node's own loop does), bob receives it:
each side stores the burst in a handful of transactions instead of one per message,
every message arrives in a few ``events`` messages (consecutive live sends to one peer
are merged), and alice never queues an event for bob before her store holds it
(checked on every message her channel to bob is handed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from node.api.python import open_node
from node.group.events import decode_event
from node.store.db import Store
from node.wire.messages import EventsMessage, decode_message

SOON = 10.0
BURST = 100


@contextmanager
def counted(store: Store) -> Iterator[list[int]]:
    """Count the outermost transactions ``store`` commits."""
    commits = [0]
    real = store.transaction

    @contextmanager
    def transaction() -> Iterator[None]:
        outer = not store.in_transaction
        with real():
            yield
        if outer:
            commits[0] += 1

    store.transaction = transaction  # type: ignore[method-assign]
    try:
        yield commits
    finally:
        del store.transaction


async def test_a_burst_is_stored_in_a_few_transactions_and_sent_only_once_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice, \
            open_node(tmp_path / "bob", name="bob", peers=[alice.listen]) as bob:
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
            group = alice.create_group("lab")
            alice.add(group, bob.peer_id)
            alice.send(group, "warm-up")  # (the sender key, through the Python API)
            g_bob = await bob.group(group)
            await bob.service.wait_until(lambda: len(g_bob.texts) >= 3)
        service, store = alice.service, alice.service.store
        g_alice = await alice.group(group)
        conn = alice.node.connections[bob.node.peer_id]
        unstored: list[str] = []
        carried: list[int] = []  # events per events message
        real_send = conn.send_nowait

        def checked(data: bytes) -> bool:  # what alice hands her channel to bob
            message = decode_message(data)
            if isinstance(message, EventsMessage):
                carried.append(len(message.events))
                for raw in message.events:
                    if not store.has_event(decode_event(raw).id):
                        unstored.append(decode_event(raw).id.hex())
            return real_send(data)

        monkeypatch.setattr(conn, "send_nowait", checked)
        with counted(store) as mine, counted(bob.service.store) as theirs:
            for i in range(BURST):
                service.send(g_alice, f"burst {i}")  # never yields: one batch
            await service.committed()
            with trio.fail_after(SOON):
                await bob.service.wait_until(
                    lambda: sum(1 for t in g_bob.texts.values()
                                if t and t.startswith("burst")) == BURST)
                await service.wait_until(
                    lambda: all(g_alice.has(bob.node.peer_id, e)
                                for e in g_alice.core.ordered()))
        assert unstored == []
        assert sum(carried) >= BURST and len(carried) <= 3, carried  # merged per peer
        assert mine[0] <= 3, mine  # the burst, and delivery receipts
        assert theirs[0] < BURST // 4, theirs  # whatever arrived together, together
