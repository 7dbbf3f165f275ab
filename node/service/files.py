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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.errors import KithError, RemoteProtocolError
from node.files.attachment import (
    CHUNK_SIZE,
    HARD_MAX_FILE,
    Chunker,
    FileRef,
    decrypt_chunks,
)
from node.files.names import candidates
from node.group.bodies import Role
from node.group.content import Post, encode_content
from node.group.events import Event
from node.ids import EventId, GroupId, PeerId
from node.service.chunk_serving import ChunkServer
from node.service.file_fetch import (
    PARALLEL_FETCHES,
    Fetching,
    FileError,
    Transfer,
    Upload,
    _MissingChunk,
    _quote,
    mib,
)
from node.service.file_storage import Storage
from node.store.chunks import ChunkStore

if TYPE_CHECKING:
    from node.group.member import Member as Group
    from node.service.host import GroupHost

log = logging.getLogger(__name__)

#: Room a caption leaves in a private MESSAGE (the ciphertext is at most 64 KiB).
MAX_CONTENT = 60 * 1024


class FileService(Fetching, Storage):
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
        self._pruned: set[EventId] = set()  # while loading: files pruned to free space
        self._load()

    @property
    def cap(self) -> int:
        return min(self.service.node.config.max_file_size, HARD_MAX_FILE)

    def _load(self) -> None:
        held: dict[EventId, set[int]] = {}
        for _, event_id, index, _ in self.store.chunks():
            held.setdefault(event_id, set()).add(index)
        self._pruned = self.store.pruned()
        for group in self.service.groups.values():
            for target in group.core.deleted:
                if target in held:
                    self.store.forget_chunks(target)
                    del held[target]
            self.notice(group, group.core.ordered(), held)
        for event_id in set(held) - set(self.transfers):  # rows of messages we no longer know
            self.store.forget_chunks(event_id)
        self._pruned.clear()  # only messages known at start can have been pruned
        # Their files, and any other chunk no kept file names, go now (file_storage).
        removed, freed = self.sweep()
        if removed:
            log.info("removed %d orphaned attachment chunk(s) at start, freed %s",
                     removed, mib(freed))

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
            pruned = event.id in self._pruned
            for index, address in enumerate(ref.chunks):
                self._by_address.setdefault(address, set()).add((event.id, index))
                if pruned:
                    continue
                if index not in have and self.chunks.has(address):  # our own, or a repeat
                    self.store.add_chunk(group.id, event.id, index, address, 0)
                    have.add(index)
            transfer.have = have
            self.transfers[event.id] = transfer
            if pruned:
                transfer.state = "pruned"  # removed to free space: fetched only on demand
            elif len(have) == len(ref.chunks):
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
        except ValueError as exc:  # a NUL in the path
            raise FileError(f"cannot read {path!r}: {exc}") from None
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
        if transfer.state == "pruned":
            self.unprune(transfer)
            raise FileError(f"{_quote(ref.name)} was removed from this node to free space "
                            f"(kith files prune); fetching it again from the group's members: "
                            f"save it again when it is here")
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
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
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
