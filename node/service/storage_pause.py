"""``StoragePauses``: the driver's storage-pause bookkeeping (trio; a base of ``EffectDriver``).

A write can fail for a reason that passes: a full disk, an I/O error, the
database locked by another program (``StorageUnavailableError``). SQLite has
undone the transaction by then, but the member core has already moved on: it
holds the input's events, keys and counters in memory. Undoing that would mean
rebuilding the core from the store; instead the driver makes the failure look
like a very slow disk:

* the input's effects are *held*, not dropped, and nothing after the failed
  persist runs: no send (so we never acknowledge, relay or announce an event we
  have not stored), no watcher, no timer;
* the node is *paused* until that same batch commits. While paused, no further
  input reaches a member core: local commands are refused up front with one
  clear line (``StoragePausedError``: "cannot write: disk full; kith will
  resume when space returns"); peer messages, channel changes and timer ticks
  wait in arrival order behind the held batch (at most ``MAX_DEFERRED`` peer
  messages: later ones are dropped unacknowledged, and the peer sends them
  again, as it does for anything we have not acknowledged); the periodic
  vector announcement is skipped;
* the writer task (``_save_deliveries``) tries again after ``RETRY_FIRST``
  seconds, doubling up to ``RETRY_MAX``; when the held batch commits, its
  effects run and the waiting inputs are handled in order, exactly as if the
  disk had been slow; then every group announces its vector, so peers resend
  whatever was dropped. One line is logged on pausing and one on resuming
  (rate limited: a disk that flaps does not flood the log).

So nothing is sent that is not stored, and nothing stored is lost: a crash
while paused is a crash after the last committed transaction, which the store
survives anyway (the held batch was never acknowledged or sent). A command
whose own write failed is kept and goes out once stored (the user is told so);
delivery receipts that fail to save are put back and saved with the retry.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from node.errors import KithError, StoragePausedError, StorageUnavailableError
from node.group import commands as C
from node.group.events import Event, GroupId
from node.group.member import Member
from node.group.member_io import Announce, Input, Received, Tick
from node.ids import short_id
from node.logs import RateLimitedLog
from node.store.db import Store

if TYPE_CHECKING:
    from node.service.files import FileService
    from node.service.links import PeerLinks

log = logging.getLogger("node.service.groups")  # one logger for the group service

#: While storage is paused, the first and the longest wait between two tries (seconds).
RETRY_FIRST = 0.25
RETRY_MAX = 4.0
#: Peer messages held while storage is paused; later ones are dropped unacknowledged.
MAX_DEFERRED = 1024
#: What a refused command is told the node waits for, by reason.
_UNTIL = {"disk full": "space returns", "disk quota exceeded": "space returns",
          "disk I/O error": "the disk works again",
          "database locked by another program": "the database is free again"}


class StoragePauses:
    """Pausing on a write that fails for a passing reason, and resuming (module docstring)."""

    node: PeerLinks
    store: Store
    groups: dict[GroupId, Member]
    files: FileService | None

    def __init__(self) -> None:
        # Why we are paused, since when, and what waits, oldest first (the held batch,
        # then inputs that came after it).
        self._paused: StorageUnavailableError | None = None
        self._paused_since = 0.0
        self._backlog: deque[Callable[[], object]] = deque()
        self._deferred = 0  # peer messages in the backlog
        self._deferred_ticks: set[GroupId] = set()
        self._pause_changed = trio.Event()
        self._replaying = False  # retry_storage is running the backlog (one by one)
        self._storage_log = RateLimitedLog(log, interval=60.0)

    # (provided by EffectDriver)
    def _handle_now(self, group: Member, input: Input | C.Command,
                    now: float | None = None) -> Event | None:
        raise NotImplementedError

    def save_deliveries(self) -> bool:
        raise NotImplementedError

    def notify_all(self) -> None:
        raise NotImplementedError

    # -- inputs that wait --

    def _defer(self, group: Member, input: Input) -> None:
        """Keep ``input`` for when storage works again (or drop it: module docstring)."""
        if isinstance(input, Announce):
            return  # periodic; every group announces on resuming
        if isinstance(input, Tick):
            if group.id in self._deferred_ticks:
                return  # one tick does for all
            self._deferred_ticks.add(group.id)
        elif isinstance(input, Received):
            if self._deferred >= MAX_DEFERRED:
                self._storage_log.info(("storage", "dropped"),
                                       "storage paused: dropping a message from %s unread; "
                                       "it will be sent again", short_id(input.sender))
                return
            self._deferred += 1
        self._backlog.append(partial(self._replay_input, group, input))

    def _replay_input(self, group: Member, input: Input) -> None:
        if isinstance(input, Tick):
            self._deferred_ticks.discard(group.id)
        elif isinstance(input, Received):
            self._deferred -= 1
        self._handle_now(group, input)

    # -- pausing and resuming --

    @property
    def storage_paused(self) -> str | None:
        """Why storage is paused ("disk full", ...), or None if it is not."""
        return None if self._paused is None else self._paused.reason

    def storage_refusal(self, *, kept: bool = False) -> StoragePausedError:
        """The one line a command gets while storage is paused."""
        reason = self.storage_paused or "storage unavailable"
        line = (f"cannot write: {reason}; kith will resume when "
                f"{_UNTIL.get(reason, 'it can write again')}")
        if kept:
            line += ", and send this then"
        return StoragePausedError(line)

    def storage_failed(self, exc: StorageUnavailableError) -> None:
        """A write of ours outside the driver failed for a passing reason: pause too."""
        self._pause(exc)

    def _pause(self, exc: StorageUnavailableError) -> None:
        if self._paused is None:
            self._paused_since = time.monotonic()
            self._storage_log.warning(
                ("storage", "paused"), "storage paused: %s; not acknowledging or sending "
                "anything new until it can write again", exc)
            self._pause_changed.set()
            self._pause_changed = trio.Event()
        self._paused = exc
        self.notify_all()

    def retry_storage(self) -> bool:
        """Try the held writes again, oldest first; True if storage works again."""
        if self._paused is None:
            return True
        self._paused = None
        held = len(self._backlog)
        # A locked database fails the try at once instead of holding up the node; the
        # held inputs run one transaction each, so a failure stops at the right one.
        self._replaying = True
        try:
            with self.store.busy_timeout(0):
                if not self.save_deliveries():
                    return False
                while self._backlog:
                    item = self._backlog.popleft()
                    try:
                        item()  # a write that fails again holds its batch at the head again
                    except KithError as exc:  # a refusal or a bad input: its own end
                        log.warning("after the storage pause: %s", exc)
                    if self._paused is not None:
                        return False
        finally:
            self._replaying = False
        self._storage_log.info(
            ("storage", "resumed"), "storage writable again after %.0f s: resumed "
            "(%d held input(s) done)", time.monotonic() - self._paused_since, held)
        for group in list(self.groups.values()):  # peers resend what we dropped
            self._handle_now(group, Announce())
        if self.files is not None:  # transfers that met the full disk try again
            for peer in list(self.node.connections):
                self.files.peer_connected(peer)
        self.notify_all()
        return True
