"""Fetching attachment chunks from other members (part of ``FileService``).

Theory of operation
-------------------
Every member that decrypts a post with a file records a ``Transfer`` and,
when the file is within this node's size cap, fetches the chunks it lacks. It
asks connected members of the group (the author first, then whoever has the
fewest requests outstanding) with ``want`` messages, at most ``WINDOW`` chunks
in flight per file. Each arriving chunk is hashed before anything else; a
chunk that does not match its address, a ``nochunk`` answer or a request that
times out marks that member as tried *for that chunk*, and the chunk is asked
of another member. When every connected member has been tried, the transfer
waits for a new member to connect or ``RETRY_AFTER`` seconds.

``Fetching`` is the half of ``FileService`` (node.service.files) that does this;
the other half learns of files, sends them and saves them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from node.errors import KithError, StorageError
from node.files.attachment import CHUNK_SIZE, FileRef, chunk_hash
from node.group.events import Event
from node.ids import EventId, GroupId, PeerId, short_id
from node.logs import RateLimitedLog
from node.store.chunks import ChunkStore
from node.store.db import Store
from node.wire.messages import (
    MAX_WANT,
    ChunkMessage,
    ChunkTraffic,
    NoChunkMessage,
    WantMessage,
    encode_message,
)

if TYPE_CHECKING:
    from node.service.chunk_serving import ChunkServer
    from node.service.host import GroupHost
    from node.service.links import PeerLink

log = logging.getLogger("node.service.files")
peer_log = RateLimitedLog(log)  # lines a peer can repeat: limited per peer and reason

#: Chunks of one file in flight at once (over all members asked).
WINDOW = 8
#: Files fetched at once.
PARALLEL_FETCHES = 2
#: A requested chunk that has not come in this long is asked of someone else (seconds).
REQUEST_TIMEOUT = 20.0
#: A transfer that has asked everyone connected tries them all again this much later.
RETRY_AFTER = 5.0

class FileError(KithError):
    """An attachment operation the user asked for cannot be done (one clear line)."""


class _MissingChunk(FileError):
    def __init__(self, index: int, address: bytes) -> None:
        super().__init__(f"chunk {index} is missing or damaged on disk; it is being fetched "
                         f"again, try later")
        self.address = address


def mib(size: int) -> str:
    """A size for people: ``12.5 MiB``, ``768.0 KiB``, ``10 bytes``."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"


@dataclass(slots=True)
class Transfer:
    """One attachment: the file of message ``event``, and how much of it we hold."""

    group: GroupId
    event: EventId
    author: PeerId
    ref: FileRef
    have: set[int] = field(default_factory=set)
    state: str = "fetching"  # fetching | complete | too large | deleted | pruned
    inflight: dict[int, tuple[PeerId, float]] = field(default_factory=dict)
    tried: dict[int, set[PeerId]] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)
    bad: int = 0  # chunks that did not match their address
    stalled: bool = False
    started: bool = False

    def wake(self) -> None:
        self.changed.set()

    @property
    def bytes_have(self) -> int:
        count = len(self.ref.chunks)
        full = len(self.have) - (1 if count - 1 in self.have else 0)
        last = self.ref.size - CHUNK_SIZE * (count - 1) if count - 1 in self.have else 0
        return full * CHUNK_SIZE + last


@dataclass(slots=True)
class Upload:
    """A ``send`` with a file in progress (the CLI and the chat client poll it)."""

    id: str
    name: str
    size: int
    done: int = 0
    state: str = "encrypting"  # encrypting | sent | failed
    error: str | None = None
    event: Event | None = None
    finished: trio.Event = field(default_factory=trio.Event)




class Fetching:
    """Fetching the chunks of others' files (the attributes are ``FileService``'s)."""

    service: GroupHost
    store: Store
    chunks: ChunkStore
    transfers: dict[EventId, Transfer]
    server: ChunkServer
    _by_address: dict[bytes, set[tuple[EventId, int]]]
    _asked: dict[tuple[PeerId, bytes], int]
    _limiter: trio.CapacityLimiter
    _nursery: trio.Nursery | None

    def lost(self, address: bytes) -> None:
        raise NotImplementedError

    # -- fetching --

    def _start(self, transfer: Transfer) -> None:
        if self._nursery is not None and not transfer.started and transfer.state == "fetching":
            transfer.started = True
            self._nursery.start_soon(self._fetch, transfer)

    async def _fetch(self, transfer: Transfer) -> None:
        async with self._limiter:
            retry_at = trio.current_time() + RETRY_AFTER
            while transfer.state == "fetching":
                if len(transfer.have) == len(transfer.ref.chunks):
                    self._completed(transfer)
                    return
                transfer.changed = trio.Event()
                now = trio.current_time()
                self._expire(transfer, now)
                if not self._request(transfer, now) and not transfer.inflight:
                    if not transfer.stalled:
                        transfer.stalled = True
                        log.info("file %s: no connected member has the %d chunk(s) we "
                                 "lack; waiting", _quote(transfer.ref.name),
                                 len(transfer.ref.chunks) - len(transfer.have))
                    if now >= retry_at:
                        transfer.tried.clear()
                        retry_at = now + RETRY_AFTER
                        continue
                else:
                    transfer.stalled = False
                    retry_at = now + RETRY_AFTER
                with trio.move_on_after(1.0):
                    await transfer.changed.wait()

    def _completed(self, transfer: Transfer) -> None:
        transfer.state = "complete"
        group = self.service.groups.get(transfer.group)
        log.info("file %s complete (%s)", _quote(transfer.ref.name), mib(transfer.ref.size))
        if group is not None:
            self.service.notify(group)

    def _expire(self, transfer: Transfer, now: float) -> None:
        connections = self.service.node.connections
        for index, (peer, deadline) in list(transfer.inflight.items()):
            if deadline <= now or peer not in connections:
                del transfer.inflight[index]
                transfer.tried.setdefault(index, set()).add(peer)
                self._unask(peer, transfer.ref.chunks[index])

    def _candidates(self, transfer: Transfer) -> list[PeerId]:
        group = self.service.groups.get(transfer.group)
        if group is None:
            return []
        connections = self.service.node.connections
        return [m for m in group.core.state.members if m != self.service.me and m in connections]

    def _request(self, transfer: Transfer, now: float) -> bool:
        """Ask for missing chunks up to the window; True if anything was asked."""
        candidates = self._candidates(transfer)
        load = {p: 0 for p in candidates}
        for peer, _ in transfer.inflight.values():
            if peer in load:
                load[peer] += 1
        wants: dict[PeerId, list[bytes]] = {}
        for index, address in enumerate(transfer.ref.chunks):
            if len(transfer.inflight) >= WINDOW:
                break
            if index in transfer.have or index in transfer.inflight:
                continue
            options = [p for p in candidates if p not in transfer.tried.get(index, ())]
            if not options:
                continue
            peer = min(options, key=lambda p: (load[p], p != transfer.author, bytes(p)))
            load[peer] += 1
            transfer.inflight[index] = (peer, now + REQUEST_TIMEOUT)
            self._asked[(peer, address)] = self._asked.get((peer, address), 0) + 1
            wants.setdefault(peer, []).append(address)
        for peer, addresses in wants.items():
            conn = self.service.node.connections.get(peer)
            for i in range(0, len(addresses), MAX_WANT):
                message = WantMessage(transfer.group, tuple(addresses[i:i + MAX_WANT]))
                if conn is not None:
                    conn.send_nowait(encode_message(message))
        return bool(wants)

    def _unask(self, peer: PeerId, address: bytes) -> bool:
        key = (peer, address)
        count = self._asked.get(key, 0)
        if count <= 1:
            self._asked.pop(key, None)
        else:
            self._asked[key] = count - 1
        return count > 0

    # -- peer messages (hook: GroupService.on_message) --

    async def on_message(self, conn: PeerLink, message: ChunkTraffic) -> None:
        peer = conn.info.peer_id
        if isinstance(message, WantMessage):
            self.server.on_want(conn, message)
        elif isinstance(message, NoChunkMessage):
            for address in message.addresses:
                if self._unask(peer, address):
                    self._refused(peer, address, bad=False)
        else:
            self._on_chunk(conn, message)

    def _on_chunk(self, conn: PeerLink, message: ChunkMessage) -> None:
        peer, address = conn.info.peer_id, message.address
        if not self._unask(peer, address):
            self.server.flooded(conn)
            return
        if chunk_hash(message.data) != address:
            peer_log.warning((peer, "bad chunk"), "chunk %s from %s does not hash to its "
                             "address; asking another member", address.hex()[:12], short_id(peer))
            self._refused(peer, address, bad=True)
            return
        wanted = [(t, i) for e, i in self._by_address.get(address, ())
                  if (t := self.transfers.get(e)) is not None and t.state == "fetching"
                  and i not in t.have and t.group == message.group]
        if not wanted:
            return  # asked for, but the file was deleted or completed meanwhile
        try:
            self.chunks.put(address, message.data)
            with self.store.transaction():
                for transfer, index in wanted:
                    self.store.add_chunk(transfer.group, transfer.event, index, address,
                                         len(message.data))
        except StorageError as exc:  # a full disk: keep serving, try again later
            log.warning("cannot store chunk %s: %s", address.hex()[:12], exc)
            self._refused(peer, address, bad=False)
            return
        for transfer, index in wanted:
            transfer.have.add(index)
            transfer.inflight.pop(index, None)
            transfer.wake()
        group = self.service.groups.get(message.group)
        if group is not None:
            self.service.notify(group)  # progress for anyone waiting

    def _refused(self, peer: PeerId, address: bytes, *, bad: bool) -> None:
        for event, index in self._by_address.get(address, ()):
            transfer = self.transfers.get(event)
            if transfer is None or transfer.inflight.get(index, (None,))[0] != peer:
                continue
            del transfer.inflight[index]
            transfer.tried.setdefault(index, set()).add(peer)
            transfer.bad += bad
            transfer.wake()


def _quote(name: str) -> str:
    """A file name for a log line or an error: printable, never a terminal escape."""
    return repr(name) if not name.isprintable() else f"'{name}'"
