"""``FileService``: attachments on a running node (trio driver over ``node.files``).

Theory of operation
-------------------
Sending: the file is read, encrypted with a fresh key and cut into chunks
(``node.files.attachment``) one chunk at a time in a worker thread; each chunk
is written (fsynced: it may be the only copy) to the chunk directory before the
MESSAGE naming it is authored. The message carries the ``FileRef`` (name, size,
key, chunk addresses) inside its encryption.

Receiving: every member that decrypts a post with a file records a
``Transfer`` and, when the file is within this node's size cap, fetches the
chunks it lacks. It asks connected members of the group (the author first,
then whoever has the fewest requests outstanding) with ``want`` messages, at
most ``WINDOW`` chunks in flight per file. Each arriving chunk is hashed before
anything else; a chunk that does not match its address, a ``nochunk`` answer or
a request that times out marks that member as tried *for that chunk*, and the
chunk is asked of another member. When every connected member has been tried,
the transfer waits for a new member to connect or ``RETRY_AFTER`` seconds.
Any member that holds a chunk serves it, so a file spreads like the events do.

Serving chunks to others and refusing floods: ``node.service.chunk_serving``.

Deleting the message deletes its chunks (rows and files), and a deleted file
is neither fetched nor served again.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.errors import KithError, RemoteProtocolError, StorageError
from node.files.attachment import (
    CHUNK_SIZE,
    HARD_MAX_FILE,
    Chunker,
    FileRef,
    chunk_hash,
    decrypt_chunks,
)
from node.files.names import candidates
from node.group.bodies import Role
from node.group.content import Post, encode_content
from node.group.events import Event
from node.ids import EventId, GroupId, PeerId, short_id
from node.service.chunk_serving import ChunkServer
from node.store.chunks import ChunkStore
from node.wire.messages import (
    MAX_WANT,
    ChunkMessage,
    ChunkTraffic,
    NoChunkMessage,
    WantMessage,
    encode_message,
)

if TYPE_CHECKING:
    from node.group.member import Member as Group
    from node.service.host import GroupHost
    from node.service.links import PeerLink

log = logging.getLogger(__name__)

#: Chunks of one file in flight at once (over all members asked).
WINDOW = 8
#: Files fetched at once.
PARALLEL_FETCHES = 2
#: A requested chunk that has not come in this long is asked of someone else (seconds).
REQUEST_TIMEOUT = 20.0
#: A transfer that has asked everyone connected tries them all again this much later.
RETRY_AFTER = 5.0
#: Room a caption leaves in a private MESSAGE (the ciphertext is at most 64 KiB).
MAX_CONTENT = 60 * 1024


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
    state: str = "fetching"  # fetching | complete | too large | deleted
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


class FileService:
    def __init__(self, service: GroupHost) -> None:
        self.service = service
        self.store = service.store
        self.chunks = ChunkStore(self.store.path.parent / "chunks")
        self.transfers: dict[EventId, Transfer] = {}
        self.uploads: dict[str, Upload] = {}
        self._by_address: dict[bytes, set[tuple[EventId, int]]] = {}
        self._asked: dict[tuple[PeerId, bytes], int] = {}
        self.server = ChunkServer(self, service.node)  # answers wants, refuses floods
        self._limiter = trio.CapacityLimiter(PARALLEL_FETCHES)
        self._nursery: trio.Nursery | None = None
        self._load()

    @property
    def cap(self) -> int:
        return min(self.service.node.config.max_file_size, HARD_MAX_FILE)

    def _load(self) -> None:
        held: dict[EventId, set[int]] = {}
        for _, event_id, index, _ in self.store.chunks():
            held.setdefault(event_id, set()).add(index)
        for group in self.service.groups.values():
            for target in group.core.deleted:
                if target in held:
                    self._remove_files(self.store.forget_chunks(target))
                    del held[target]
            self.notice(group, group.core.ordered(), held)
        for event_id in set(held) - set(self.transfers):  # rows of messages we no longer know
            self._remove_files(self.store.forget_chunks(event_id))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.server.run)
            for transfer in self.transfers.values():
                self._start(transfer)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -- learning of files (hook: GroupService._notify) --

    def notice(self, group: Group, events: Sequence[Event],
               held: dict[EventId, set[int]] | None = None) -> None:
        """Messages just delivered or decrypted: start tracking the files they carry."""
        for event in events:
            content = group.contents.get(event.id)
            if (not isinstance(content, Post) or content.file is None
                    or event.id in self.transfers or event.id in group.core.deleted):
                continue
            ref = content.file
            transfer = Transfer(group.id, event.id, event.author, ref)
            have = held.get(event.id, set()) if held is not None else set()
            for index, address in enumerate(ref.chunks):
                self._by_address.setdefault(address, set()).add((event.id, index))
                if index not in have and self.chunks.has(address):  # our own, or a repeat
                    self.store.add_chunk(group.id, event.id, index, address, 0)
                    have.add(index)
            transfer.have = have
            self.transfers[event.id] = transfer
            if len(have) == len(ref.chunks):
                transfer.state = "complete"
            elif ref.size > self.cap:
                transfer.state = "too large"
                log.info("group %s: not fetching %s (%s): over this node's limit of %s",
                         self.service.label(group), _quote(ref.name), mib(ref.size),
                         mib(self.cap))
            else:
                self._start(transfer)

    def forget(self, group: Group, target: EventId) -> None:
        """A message was deleted (hook: GroupService._erase): its file goes too."""
        transfer = self.transfers.get(target)
        if transfer is not None:
            transfer.state = "deleted"
            transfer.have.clear()
            for index, (peer, _) in transfer.inflight.items():
                self._unask(peer, transfer.ref.chunks[index])
            transfer.inflight.clear()
            transfer.wake()
            for index, address in enumerate(transfer.ref.chunks):
                owners = self._by_address.get(address)
                if owners is not None:
                    owners.discard((target, index))
                    if not owners:
                        del self._by_address[address]
        self._remove_files(self.store.forget_chunks(target))

    def _remove_files(self, addresses: Sequence[bytes]) -> None:
        for address in addresses:
            if not self._by_address.get(address):
                self.chunks.remove(address)

    def peer_connected(self, peer: PeerId) -> None:
        """A member may have what others lacked: stalled transfers try it."""
        for transfer in self.transfers.values():
            if transfer.state == "fetching":
                for tried in transfer.tried.values():
                    tried.discard(peer)
                transfer.wake()

    # -- sending --

    def start_upload(self, group: Group, path: Path, text: str = "",
                     mentions: Sequence[PeerId] = ()) -> Upload:
        """Check and begin sending ``path``; the upload finishes in the background."""
        self._check_can_post(group)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise FileError(f"{path} is not a regular file")
            if not os.access(path, os.R_OK):
                raise FileError(f"cannot read {path}: permission denied")
        except OSError as exc:
            raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if size > self.cap:
            raise FileError(f"{path.name} is {mib(size)}, over this node's limit of "
                            f"{mib(self.cap)} (kith run --max-file-size)")
        name = path.name or "file"
        media = mimetypes.guess_type(name)[0] or ""
        probe = FileRef(name[:255], size, bytes(32),
                        tuple(bytes(32) for _ in range(-(-size // CHUNK_SIZE))), media)
        if len(encode_content(Post(text, None, tuple(mentions), probe))) > MAX_CONTENT:
            raise FileError("the caption is too long to go with this file")
        if self._nursery is None:
            raise FileError("the node is not running")
        upload = Upload(secrets.token_hex(8), name, size)
        self.uploads[upload.id] = upload
        self._nursery.start_soon(self._upload, group, path, text, tuple(mentions), media, upload)
        return upload

    def _check_can_post(self, group: Group) -> None:
        role = group.core.state.role(self.service.me)
        if role is None:
            raise FileError("you are not a member of this group")
        if role is Role.GUEST:
            raise FileError("guests can read but not post")

    async def _upload(self, group: Group, path: Path, text: str, mentions: tuple[PeerId, ...],
                      media: str, upload: Upload) -> None:
        chunker = Chunker(secrets.token_bytes(32), upload.size)
        try:
            with path.open("rb") as f:
                while (n := chunker.next_piece_size()) is not None:
                    await trio.to_thread.run_sync(self._encrypt_piece, f, n, chunker)
                    upload.done += n
                if f.read(1):
                    raise FileError(f"{path.name} grew while it was being sent; try again")
            ref = chunker.ref(upload.name[:255], media)
            upload.event = self.service.post(group, Post(text, None, mentions, ref))
            upload.state = "sent"
            log.info("group %s: sent %s (%s, %d chunk(s))", self.service.label(group),
                     _quote(ref.name), mib(ref.size), len(ref.chunks))
        except (OSError, KithError, ValueError) as exc:
            self._remove_files(chunker.addresses)  # no message names them
            upload.state = "failed"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            upload.error = f"cannot send {path.name}: {reason}"
            log.warning("%s", upload.error)
        finally:
            upload.finished.set()
            self.service.notify(group)

    def _encrypt_piece(self, f: Any, n: int, chunker: Chunker) -> None:
        """In a worker thread: read, encrypt and durably store the next chunk."""
        piece = f.read(n)
        if len(piece) != n:
            raise FileError("the file shrank while it was being sent; try again")
        address, chunk = chunker.add(piece)
        self.chunks.put(address, chunk, durable=True)

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
            log.warning("chunk %s from %s does not hash to its address; asking another member",
                        address.hex()[:12], short_id(peer))
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

    # -- what the chunk server asks (node.service.chunk_serving.ServedFiles) --

    def shares_group(self, peer: PeerId, group: GroupId) -> bool:
        """Are both ``peer`` and this node current members of ``group``?"""
        found = self.service.groups.get(group)
        return (found is not None and peer in found.core.state.members
                and self.service.me in found.core.state.members)

    def holds(self, group: GroupId, address: bytes) -> bool:
        """Do we hold chunk ``address`` of a file of ``group``?"""
        for event, index in self._by_address.get(address, ()):
            transfer = self.transfers.get(event)
            if transfer is not None and transfer.group == group and index in transfer.have:
                return True
        return False

    def group_of(self, address: bytes) -> GroupId | None:
        """The group of a file that chunk ``address`` belongs to, if any."""
        for event, _ in self._by_address.get(address, ()):
            transfer = self.transfers.get(event)
            if transfer is not None:
                return transfer.group
        return None

    def lost(self, address: bytes) -> None:
        """A chunk file we thought we had is gone or damaged: fetch it again."""
        for event, index in self._by_address.get(address, ()):
            transfer = self.transfers.get(event)
            if transfer is not None and index in transfer.have:
                transfer.have.discard(index)
                self.store.forget_chunk(event, index)
                if transfer.state == "complete":
                    transfer.state = "fetching"
                    transfer.started = False
                    self._start(transfer)

    # -- status and saving --

    def transfer(self, event: EventId) -> Transfer:
        transfer = self.transfers.get(event)
        if transfer is None:
            raise FileError(f"message {event.hex()[:12]} has no file (or it cannot be read here)")
        return transfer

    def view(self, transfer: Transfer) -> dict[str, Any]:
        ref = transfer.ref
        return {"name": ref.name, "size": ref.size, "type": ref.media_type,
                "state": transfer.state, "chunks": len(ref.chunks),
                "have": len(transfer.have), "bytes_have": transfer.bytes_have,
                "stalled": transfer.stalled, "bad_chunks": transfer.bad}

    async def save(self, event: EventId, directory: Path) -> Path:
        """Decrypt the file of ``event`` into ``directory``; never overwrites. The path."""
        transfer = self.transfer(event)
        ref = transfer.ref
        if transfer.state == "deleted":
            raise FileError("the message and its file were deleted")
        if transfer.state == "too large":
            raise FileError(f"{_quote(ref.name)} is {mib(ref.size)}, over this node's limit of "
                            f"{mib(self.cap)}; it was not fetched")
        if transfer.state != "complete":
            raise FileError(f"{_quote(ref.name)} is not here yet: {len(transfer.have)} of "
                            f"{len(ref.chunks)} chunks")
        if not directory.is_absolute():
            raise FileError(f"save needs an absolute directory, not {directory}")
        try:
            return await trio.to_thread.run_sync(self._write_file, transfer, directory)
        except _MissingChunk as exc:
            self.lost(exc.address)
            raise

    def _write_file(self, transfer: Transfer, directory: Path) -> Path:
        """In a worker thread: decrypt into a new file in ``directory``."""
        ref = transfer.ref
        if not directory.is_dir():
            raise FileError(f"{directory} is not a directory")
        for name in candidates(ref.name):
            path = directory / name
            if path.parent != directory:  # safe_name makes one component; belt and braces
                raise FileError(f"refusing to save {_quote(ref.name)} outside {directory}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise FileError(f"cannot create {path}: {exc.strerror or exc}") from None
            try:
                with os.fdopen(fd, "wb") as out:
                    for piece in decrypt_chunks(ref, self._read_all(ref)):
                        out.write(piece)
            except (RemoteProtocolError, OSError, KithError) as exc:
                path.unlink(missing_ok=True)
                if isinstance(exc, _MissingChunk):
                    raise
                if isinstance(exc, OSError):
                    raise FileError(f"cannot write {path}: {exc.strerror or exc}") from None
                raise FileError(f"cannot save {_quote(ref.name)}: {exc}") from None
            return path
        raise AssertionError("candidates never end")

    def _read_all(self, ref: FileRef) -> Any:
        for index, address in enumerate(ref.chunks):
            data = self.chunks.get(address)
            if data is None:
                raise _MissingChunk(index, address)
            yield data


def _quote(name: str) -> str:
    """A file name for a log line or an error: printable, never a terminal escape."""
    return repr(name) if not name.isprintable() else f"'{name}'"
