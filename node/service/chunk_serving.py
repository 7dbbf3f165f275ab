"""Serving attachment chunks to other members, and refusing chunk floods (trio driver).

Part of the attachments (``FileService``, node.service.files), split out for size;
it sees them through ``ServedFiles`` and the channels through ``PeerLinks``. A ``want`` is
answered only for chunks of files of a group the asker is a current member of,
and only chunks we hold; everything else gets ``nochunk``. Chunks go out through
the peer's queue with back-pressure (``wait_queue_below``), from one task per
peer, so a 100 MiB file never looks like a stuck peer. A ``chunk`` we did not ask
that peer for is dropped unread (one log line per peer per
``FLOOD_LOG_INTERVAL``); past ``FLOOD_BUDGET`` of them in a minute the channel to
that peer is closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import trio

from node.errors import StorageError
from node.ids import GroupId, PeerId, short_id
from node.service.links import PeerLink, PeerLinks
from node.store.chunks import ChunkStore
from node.wire.messages import (
    ChunkMessage,
    ChunkTraffic,
    NoChunkMessage,
    WantMessage,
    encode_message,
)

log = logging.getLogger(__name__)

#: Chunk messages allowed in a peer's send queue before we wait for it to drain.
SERVE_QUEUE = 8
#: Addresses queued per peer; a ``want`` beyond that is answered ``nochunk``.
SERVE_BACKLOG = 64
#: Unsolicited chunks tolerated from one peer per minute before its channel is closed.
FLOOD_BUDGET = 32
FLOOD_LOG_INTERVAL = 10.0


@dataclass(slots=True)
class _Flood:
    count: int = 0
    since: float = 0.0
    logged: float = -FLOOD_LOG_INTERVAL


class ServedFiles(Protocol):
    """What the server needs of the attachments it serves from (``FileService``)."""

    @property
    def chunks(self) -> ChunkStore: ...

    def shares_group(self, peer: PeerId, group: GroupId) -> bool:
        """Are both ``peer`` and this node current members of ``group``?"""
        ...

    def holds(self, group: GroupId, address: bytes) -> bool:
        """Do we hold chunk ``address`` of a file of ``group``?"""
        ...

    def group_of(self, address: bytes) -> GroupId | None:
        """The group of a file that chunk ``address`` belongs to, if any."""
        ...

    def lost(self, address: bytes) -> None:
        """Chunk ``address`` is gone or damaged on disk: fetch it again."""
        ...


class ChunkServer:
    """Answers wants and refuses floods; ``run`` owns one serving task per asking peer."""

    def __init__(self, files: ServedFiles, links: PeerLinks) -> None:
        self.files = files
        self.links = links
        self._serving: dict[PeerId, trio.MemorySendChannel[bytes]] = {}
        self._flood: dict[PeerId, _Flood] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def on_want(self, conn: PeerLink, message: WantMessage) -> None:
        peer = conn.info.peer_id
        member = self.files.shares_group(peer, message.group)
        refused: list[bytes] = []
        queue = self._serve_queue(peer) if member else None
        for address in message.addresses:
            if queue is None or not self.files.holds(message.group, address):
                refused.append(address)
                continue
            try:
                queue.send_nowait(address)
            except trio.WouldBlock:
                refused.append(address)
        if refused:
            conn.send_nowait(encode_message(NoChunkMessage(message.group, tuple(refused))))

    def _serve_queue(self, peer: PeerId) -> trio.MemorySendChannel[bytes] | None:
        queue = self._serving.get(peer)
        if queue is None and self._nursery is not None:
            send, receive = trio.open_memory_channel[bytes](SERVE_BACKLOG)
            self._serving[peer] = queue = send
            self._nursery.start_soon(self._serve, peer, receive)
        return queue

    async def _serve(self, peer: PeerId, queue: trio.MemoryReceiveChannel[bytes]) -> None:
        try:
            async for address in queue:
                conn = self.links.connections.get(peer)
                if conn is None:
                    return
                await conn.wait_queue_below(SERVE_QUEUE)
                try:
                    data = self.files.chunks.get(address)
                except StorageError as exc:
                    log.warning("%s", exc)
                    data = None
                group = self.files.group_of(address)
                if group is None:
                    continue
                if data is None:
                    message: ChunkTraffic = NoChunkMessage(group, (address,))
                    self.files.lost(address)
                else:
                    message = ChunkMessage(group, address, data)
                if not conn.send_nowait(encode_message(message)):
                    return
        finally:
            if self._serving.get(peer) is not None:
                self._serving.pop(peer).close()

    def flooded(self, conn: PeerLink) -> None:
        peer = conn.info.peer_id
        now = trio.current_time()
        flood = self._flood.setdefault(peer, _Flood(since=now))
        if now - flood.since > 60.0:
            flood.count, flood.since = 0, now
        flood.count += 1
        if now - flood.logged >= FLOOD_LOG_INTERVAL:
            flood.logged = now
            log.warning("dropping chunk(s) from %s that we did not ask for (%d this minute)",
                        short_id(peer), flood.count)
        if flood.count > FLOOD_BUDGET:
            log.warning("closing the channel to %s: it sent over %d chunks we did not ask for",
                        short_id(peer), FLOOD_BUDGET)
            conn.close("chunk flood")
