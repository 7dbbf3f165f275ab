"""Space taken by attachments: seeing it, reclaiming it, and sweeping orphans at start.

Theory of operation
-------------------
Every file a node holds is a set of chunk files under ``chunks/`` (``node.store.chunks``),
listed per message in the ``chunks`` table. Without care they stay forever, so:

* **Orphans go at start.** A chunk file that no message we know still needs is
  removed when the node starts: chunks of a send that crashed before its message was
  authored, of messages deleted or of groups dropped while a file was not yet swept,
  and ``.tmp`` files a crash left mid-write. "Needed" means: named by a file we hold
  whole or are still fetching. Nothing can be in progress then (uploads and fetches
  start after), so the sweep cannot race a transfer. One log line says what was freed.
* **Usage** is measured on disk (the chunk files' sizes), per group and in all; a
  chunk shared by two files counts once in the total.
* **Pruning** (``kith files prune``) removes the chunks of files whose message is older
  than a given age. The message stays, with its file reference; the event is recorded
  in ``pruned_files`` so the node does not fetch the file back by itself, after a
  restart too. Saving a pruned file (``kith save``) fetches it again from a member who
  still has it. A chunk another kept file also names is left in place.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.errors import StorageError
from node.ids import EventId, GroupId, PeerId

if TYPE_CHECKING:
    from node.service.file_fetch import Transfer
    from node.service.host import GroupHost
    from node.store.chunks import ChunkStore
    from node.store.db import Store

log = logging.getLogger(__name__)

#: Transfer states whose chunks are kept (held whole, or still being fetched).
KEPT = ("complete", "fetching")


@dataclass(slots=True)
class Usage:
    """Space taken by the files of one group (or of all, for the total)."""

    files: int = 0
    size: int = 0  # bytes on disk
    addresses: set[bytes] = field(default_factory=set)

    def view(self) -> dict[str, Any]:
        return {"files": self.files, "bytes": self.size}


class Storage:
    """Measuring and reclaiming attachment space (the attributes are ``FileService``'s)."""

    service: GroupHost
    store: Store
    chunks: ChunkStore
    transfers: dict[EventId, Transfer]
    _by_address: dict[bytes, set[tuple[EventId, int]]]
    _asked: dict[tuple[PeerId, bytes], int]

    def _unask(self, peer: PeerId, address: bytes) -> bool:
        raise NotImplementedError

    def _start(self, transfer: Transfer) -> None:
        raise NotImplementedError

    def _in_use(self, address: bytes) -> bool:
        """Does a file we keep name chunk ``address``?"""
        for event, _ in self._by_address.get(address, ()):
            transfer = self.transfers.get(event)
            if transfer is not None and transfer.state in KEPT:
                return True
        return False

    # -- at start --

    def sweep(self) -> tuple[int, int]:
        """Remove chunk files no kept file names; (files removed, bytes freed)."""
        removed = freed = 0
        try:
            subdirs = [d for d in os.scandir(self.chunks.root) if d.is_dir()]
        except OSError as exc:
            log.warning("cannot list %s: %s", self.chunks.root, exc.strerror or exc)
            return 0, 0
        for subdir in subdirs:
            with contextlib.suppress(OSError), os.scandir(subdir.path) as entries:
                for entry in entries:
                    if self._needed(entry.name) or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                        os.unlink(entry.path)
                    except OSError:
                        continue
                    removed += 1
                    freed += size
            with contextlib.suppress(OSError):
                os.rmdir(subdir.path)  # only if now empty
        return removed, freed

    def _needed(self, name: str) -> bool:
        try:
            address = bytes.fromhex(name)
        except ValueError:
            return False  # a .tmp left by a crash, or a stray file
        return self._in_use(address)

    # -- usage --

    def _held_addresses(self, transfer: Transfer) -> set[bytes]:
        return {transfer.ref.chunks[i] for i in transfer.have}

    def _size_on_disk(self, address: bytes) -> int:
        try:
            return self.chunks.path(address).stat().st_size
        except OSError:
            return 0

    def usage(self) -> dict[GroupId, Usage]:
        """Space per group; ``total()`` adds them up without counting a chunk twice."""
        groups: dict[GroupId, Usage] = {}
        for transfer in self.transfers.values():
            held = self._held_addresses(transfer)
            if not held:
                continue
            usage = groups.setdefault(transfer.group, Usage())
            usage.files += 1
            for address in held - usage.addresses:
                usage.size += self._size_on_disk(address)
            usage.addresses |= held
        return groups

    def total(self, groups: dict[GroupId, Usage]) -> Usage:
        total = Usage()
        for usage in groups.values():
            total.files += usage.files
            for address in usage.addresses - total.addresses:
                total.size += self._size_on_disk(address)
            total.addresses |= usage.addresses
        return total

    def file_rows(self, group: GroupId) -> list[tuple[Transfer, int, float | None]]:
        """The files of ``group`` we know of: (transfer, bytes on disk, message time)."""
        member = self.service.groups.get(group)
        rows = []
        for transfer in self.transfers.values():
            if transfer.group != group:
                continue
            size = sum(self._size_on_disk(a) for a in self._held_addresses(transfer))
            when = member.joined_at.get(transfer.event) if member is not None else None
            rows.append((transfer, size, when))
        rows.sort(key=lambda r: r[2] or 0.0)
        return rows

    # -- pruning --

    def prune(self, before: float, now: float, group: GroupId | None = None, *,
              dry_run: bool = False) -> tuple[list[Transfer], int]:
        """Remove the chunks of files whose message arrived before ``before``.

        Returns the files pruned and the bytes freed (or that would be, ``dry_run``).
        """
        chosen = []
        for transfer in self.transfers.values():
            if transfer.state not in KEPT or (group is not None and transfer.group != group):
                continue
            member = self.service.groups.get(transfer.group)
            when = member.joined_at.get(transfer.event) if member is not None else None
            if when is not None and when < before:
                chosen.append(transfer)
        addresses: set[bytes] = set()
        for transfer in chosen:
            addresses |= self._held_addresses(transfer)
        if dry_run:
            keep = {t.event for t in chosen}
            gone = {a for a in addresses
                    if not any((t := self.transfers.get(e)) is not None and t.state in KEPT
                               and e not in keep for e, _ in self._by_address.get(a, ()))}
            return chosen, sum(self._size_on_disk(a) for a in gone)
        with self.store.transaction():
            for transfer in chosen:
                self.store.forget_chunks(transfer.event)
                self.store.add_pruned(transfer.group, transfer.event, now)
        for transfer in chosen:
            transfer.state = "pruned"
            transfer.have.clear()
            for index, (peer, _) in transfer.inflight.items():
                self._unask(peer, transfer.ref.chunks[index])
            transfer.inflight.clear()
            transfer.wake()  # a fetch in progress ends
        freed = 0
        for address in addresses:
            if not self._in_use(address):
                freed += self._size_on_disk(address)
                try:
                    self.chunks.remove(address)
                except StorageError as exc:
                    log.warning("%s", exc)
        if chosen:
            log.info("pruned %d file(s), freed %.1f MiB", len(chosen), freed / 2**20)
        return chosen, freed

    def unprune(self, transfer: Transfer) -> None:
        """Fetch a pruned file again (someone wants to save it)."""
        self.store.forget_pruned(transfer.event)
        transfer.state = "fetching"
        transfer.started = False
        transfer.tried.clear()
        self._start(transfer)
