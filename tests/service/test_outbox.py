"""``Outboxes``: a local burst waits for room instead of filling (and dropping) a peer."""

from __future__ import annotations

import trio
import trio.testing

from node.config import Config
from node.ids import PeerId
from node.service.outbox import Outboxes

PEER = PeerId(b"\xbb" * 32)
QUEUE = 8  # the channel drops its peer at this many queued messages
ROOM = QUEUE // 2


class FakeLink:
    """A channel's queue as ``node.net.connection`` keeps it; the test plays the network."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.delivered: list[bytes] = []
        self.most = 0
        self.closed: str | None = None
        self._progress = trio.Event()

    def send_nowait(self, data: bytes) -> bool:
        if self.closed is not None:
            return False
        if len(self.queue) >= QUEUE:
            self.close("peer too slow")
            return False
        self.queue.append(data)
        self.most = max(self.most, len(self.queue))
        return True

    def queued(self) -> int:
        return len(self.queue)

    async def wait_queue_below(self, limit: int) -> None:
        while len(self.queue) >= limit and self.closed is None:
            await self._progress.wait()

    def close(self, reason: str) -> None:
        self.closed = reason
        self._wake()

    def transmit(self) -> None:
        """The network takes everything queued."""
        self.delivered += self.queue
        self.queue.clear()
        self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()


class FakeLinks:
    def __init__(self, link: FakeLink) -> None:
        self.config = Config(send_queue=QUEUE)
        self.connections = {PEER: link}


def outboxes(link: FakeLink) -> Outboxes:
    return Outboxes(FakeLinks(link))  # type: ignore[arg-type]


async def test_a_local_burst_waits_for_room_and_arrives_in_order() -> None:
    link = FakeLink()
    boxes = outboxes(link)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(boxes.run)
        await trio.testing.wait_all_tasks_blocked()
        burst = [b"m%d" % i for i in range(50)]
        for data in burst:  # no await in between, as a script that never yields
            assert boxes.send(link, data, local=True)  # type: ignore[arg-type]
        assert boxes.send(link, b"ack", local=False)  # type: ignore[arg-type]
        assert link.queued() == ROOM and boxes.waiting(link) == 50 + 1 - ROOM  # type: ignore[arg-type]
        room: list[bool] = []

        async def wait_room() -> None:
            await boxes.room_for_all()
            room.append(True)

        nursery.start_soon(wait_room)
        while boxes.waiting(link):  # type: ignore[arg-type]
            await trio.testing.wait_all_tasks_blocked()
            assert not room  # no room while anything waits in the outbox
            link.transmit()
            await trio.testing.wait_all_tasks_blocked()
        assert room == [True]
        link.transmit()
        nursery.cancel_scope.cancel()
    assert link.closed is None
    assert link.most == ROOM
    assert link.delivered == [*burst, b"ack"]  # the peer's own traffic stayed behind ours


async def test_sends_go_straight_out_while_there_is_room_or_they_are_not_local() -> None:
    link = FakeLink()
    boxes = outboxes(link)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(boxes.run)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(ROOM):
            boxes.send(link, b"%d" % i, local=True)  # type: ignore[arg-type]
        for i in range(ROOM):
            boxes.send(link, b"p%d" % i, local=False)  # type: ignore[arg-type]
        assert link.queued() == QUEUE and boxes.waiting(link) == 0  # type: ignore[arg-type]
        assert not boxes.send(link, b"one too many", local=False)  # type: ignore[arg-type]
        assert link.closed == "peer too slow"  # a stuck peer is still dropped by its channel
        nursery.cancel_scope.cancel()


async def test_a_closed_channel_drops_its_outbox_and_frees_waiters() -> None:
    link = FakeLink()
    boxes = outboxes(link)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(boxes.run)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(20):
            boxes.send(link, b"%d" % i, local=True)  # type: ignore[arg-type]
        assert boxes.waiting(link) == 20 - ROOM  # type: ignore[arg-type]
        link.close("peer left")
        with trio.fail_after(1):
            await boxes.room_for_all()
        assert boxes.waiting(link) == 0  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


