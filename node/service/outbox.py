"""``Outboxes``: a local author's messages wait here rather than fill a peer's queue (trio).

Theory of operation
-------------------
A channel drops its peer when the peer's send queue reaches ``Config.send_queue``
messages (``node.net.connection``): that is how a stuck peer is told apart from a
busy one. A local script that authors faster than the network drains would look
just like that: ``send`` called 300 times without yielding never lets the queue's
sender task run in between, so every peer would be dropped because of *our* burst.

So the sends of a *local* command (``local=True``) go straight to a peer's queue only
while it is less than half full (``room``); after that they wait in that channel's
outbox here, and one task per outbox moves them on as the queue drains
(``wait_queue_below``). Once a channel has an outbox, everything else for it waits
behind (the peer still gets our messages in the order we made them); sends caused by
peers go straight to the queue as before, so a stuck peer is still dropped by its
channel. Callers that can wait (the control socket) ``await room()`` before
authoring, so an outbox forms only under a caller that never yields.

An outbox belongs to one channel. When the channel ends what it held is dropped: the
events in it are unacknowledged, so the member core sends them again when the peer is
back (``PeerUp``). An outbox holds at most ``MAX_OUTBOX`` messages; beyond that the
peer is dropped as too slow, as its channel would have.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from node.service.links import PeerLink, PeerLinks

#: Most messages one channel's outbox holds (a local burst of that many never yielding).
MAX_OUTBOX = 8192


class _Outbox:
    __slots__ = ("done", "messages")

    def __init__(self) -> None:
        self.messages: deque[bytes] = deque()
        self.done = trio.Event()  # set when the outbox is gone (drained or dropped)


class Outboxes:
    """The outboxes of a node's channels (see the module docstring)."""

    def __init__(self, links: PeerLinks) -> None:
        self.links = links
        self._boxes: dict[PeerLink, _Outbox] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def room(self) -> int:
        """Local sends go straight to a queue holding fewer messages than this."""
        return max(1, self.links.config.send_queue // 2)

    def waiting(self, conn: PeerLink) -> int:
        """Messages waiting in ``conn``'s outbox."""
        box = self._boxes.get(conn)
        return 0 if box is None else len(box.messages)

    async def run(self) -> None:
        """Serve the outboxes until cancelled (without it, every send goes straight out)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def send(self, conn: PeerLink, data: bytes, *, local: bool) -> bool:
        """Queue ``data`` for ``conn``; False if the channel is gone or was dropped."""
        box = self._boxes.get(conn)
        if box is None:
            if not local or self._nursery is None or conn.queued() < self.room:
                return conn.send_nowait(data)
            box = self._boxes[conn] = _Outbox()
            self._nursery.start_soon(self._drain, conn, box)
        if len(box.messages) >= MAX_OUTBOX:
            conn.close(f"peer too slow ({len(box.messages)} messages waiting)")
            return False
        box.messages.append(data)
        return True

    async def _drain(self, conn: PeerLink, box: _Outbox) -> None:
        try:
            while box.messages:
                await conn.wait_queue_below(self.room)
                if conn.queued() >= self.room:
                    return  # it returned with the queue full: the channel is closing
                while box.messages and conn.queued() < self.room:
                    if not conn.send_nowait(box.messages.popleft()):
                        return  # the channel is gone (see the module docstring)
        finally:
            del self._boxes[conn]
            box.done.set()

    async def room_for_all(self) -> None:
        """Wait until every channel can take more local messages at once.

        That is: no outbox, and a queue below ``room``. A channel that is closing (its
        queue stays full) counts as having room: it is about to go.
        """
        closing: set[int] = set()
        while True:
            busy = None
            for conn in list(self.links.connections.values()):
                if id(conn) not in closing and (conn in self._boxes
                                                or conn.queued() >= self.room):
                    busy = conn
                    break
            if busy is None:
                return
            box = self._boxes.get(busy)
            if box is not None:
                await box.done.wait()
            else:
                await busy.wait_queue_below(self.room)
                if busy.queued() >= self.room:
                    closing.add(id(busy))
            await trio.lowlevel.checkpoint()
