"""Serving attachment chunks to other members, and refusing chunk floods (trio driver).

Part of ``FileService`` (node.service.files), split out for size. A ``want`` is
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
from typing import TYPE_CHECKING

import trio

from node.errors import StorageError
from node.group.events import GroupId
from node.ids import PeerId, short_id
from node.wire.messages import (
    ChunkMessage,
    ChunkTraffic,
    NoChunkMessage,
    WantMessage,
    encode_message,
)

if TYPE_CHECKING:
    from node.net.connection import PeerConnection
    from node.service.files import FileService

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


class ChunkServer:
    def __init__(self, files: FileService) -> None:
        self.files = files
        self._serving: dict[PeerId, trio.MemorySendChannel[bytes]] = {}
        self._flood: dict[PeerId, _Flood] = {}


    def on_want(self, conn: PeerConnection, message: WantMessage) -> None:
        peer = conn.info.peer_id
        group = self.files.service.groups.get(message.group)
        member = (group is not None and peer in group.core.state.members
                  and self.files.service.me in group.core.state.members)
        refused: list[bytes] = []
        queue = self._serve_queue(peer) if member else None
        for address in message.addresses:
            if queue is None or not self._holds(message.group, address):
                refused.append(address)
                continue
            try:
                queue.send_nowait(address)
            except trio.WouldBlock:
                refused.append(address)
        if refused:
            conn.send_nowait(encode_message(NoChunkMessage(message.group, tuple(refused))))

    def _holds(self, group: GroupId, address: bytes) -> bool:
        for event, index in self.files._by_address.get(address, ()):
            transfer = self.files.transfers.get(event)
            if transfer is not None and transfer.group == group and index in transfer.have:
                return True
        return False

    def _serve_queue(self, peer: PeerId) -> trio.MemorySendChannel[bytes] | None:
        queue = self._serving.get(peer)
        if queue is None and self.files._nursery is not None:
            send, receive = trio.open_memory_channel[bytes](SERVE_BACKLOG)
            self._serving[peer] = queue = send
            self.files._nursery.start_soon(self._serve, peer, receive)
        return queue

    async def _serve(self, peer: PeerId, queue: trio.MemoryReceiveChannel[bytes]) -> None:
        try:
            async for address in queue:
                conn = self.files.service.node.connections.get(peer)
                if conn is None:
                    return
                await conn.wait_queue_below(SERVE_QUEUE)
                try:
                    data = self.files.chunks.get(address)
                except StorageError as exc:
                    log.warning("%s", exc)
                    data = None
                group = self._group_of(address)
                if group is None:
                    continue
                if data is None:
                    message: ChunkTraffic = NoChunkMessage(group, (address,))
                    self.files._lost(address)
                else:
                    message = ChunkMessage(group, address, data)
                if not conn.send_nowait(encode_message(message)):
                    return
        finally:
            if self._serving.get(peer) is not None:
                self._serving.pop(peer).close()

    def _group_of(self, address: bytes) -> GroupId | None:
        for event, _ in self.files._by_address.get(address, ()):
            transfer = self.files.transfers.get(event)
            if transfer is not None:
                return transfer.group
        return None

    def flooded(self, conn: PeerConnection) -> None:
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
