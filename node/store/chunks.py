"""Attachment chunks on disk: one file per encrypted chunk, named by its content address.

Theory of operation
-------------------
Chunks are content-addressed blobs (``node.files.attachment``): a chunk's name
is the BLAKE2b-256 of its bytes, so a chunk is either exactly right or detectably
wrong. They live in ``chunks/ab/abcdef...`` under the data directory (mode
0700), not in SQLite: a 100 MiB file would otherwise pass through the WAL and
every checkpoint, and a delete with ``secure_delete`` would rewrite it page by
page. Which chunks belong to which message is in the ``chunks`` table
(``Store.add_chunk``).

A chunk is written to a temporary file and renamed into place, so a reader
never sees half a chunk. Every read checks the hash again: a file damaged on
disk (or cut short by a crash) counts as missing and is removed, and the chunk
is fetched again from another member. Only the author's own chunks, which may
be the only copy, are fsynced (``durable=True``); a received chunk can always
be fetched again.

A write that fails because the disk is full (or quota-bound, or failing) removes
its temporary file and raises ``StorageUnavailableError``: the caller refuses the
chunk for now and the transfer asks again later; nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from node.errors import StorageError, StorageUnavailableError
from node.files.attachment import HASH_LEN, chunk_hash

log = logging.getLogger(__name__)

#: ``errno`` values of write failures that may pass by themselves.
_PASSING = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EIO: "disk I/O error"}


class ChunkStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create chunk directory {root}: {exc.strerror}") from exc

    def path(self, address: bytes) -> Path:
        if len(address) != HASH_LEN:
            raise ValueError("a chunk address is 32 bytes")
        name = address.hex()
        return self.root / name[:2] / name

    def put(self, address: bytes, data: bytes, *, durable: bool = False) -> None:
        """Store a chunk whose hash the caller has checked (``address`` names it)."""
        if chunk_hash(data) != address:
            raise ValueError("chunk does not match its address")
        path = self.path(address)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a full disk must not keep half a chunk
                tmp.unlink(missing_ok=True)
            message = (f"cannot store chunk {address.hex()[:12]} in {self.root}: "
                       f"{exc.strerror or exc}")
            reason = _PASSING.get(exc.errno or 0)
            if reason is not None:
                raise StorageUnavailableError(message, reason) from exc
            raise StorageError(message) from exc

    def get(self, address: bytes) -> bytes | None:
        """The chunk, or None if we do not have it intact (a damaged file is removed)."""
        path = self.path(address)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read chunk {path}: {exc.strerror or exc}") from exc
        if chunk_hash(data) != address:
            log.warning("chunk %s is damaged on disk; removing it", address.hex()[:12])
            self.remove(address)
            return None
        return data

    def has(self, address: bytes) -> bool:
        return self.path(address).exists()

    def remove(self, address: bytes) -> None:
        try:
            self.path(address).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove chunk {address.hex()[:12]}: "
                               f"{exc.strerror or exc}") from exc
