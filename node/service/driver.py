"""``EffectDriver``: runs member-core effects on a node (trio; the base of ``GroupService``).

One input's effects run in this order: every ``Persist`` in **one** store
transaction; then the sends, through the per-peer queues (``send_nowait``: a
slow member never holds up the others; a payload shared by many peers is
encoded once; a local command's sends wait in ``node.service.outbox`` rather
than fill a queue); then watchers, log lines (``Warn``) and timers (``Wake``:
the member is ticked at that time). ``Refused`` becomes a ``GroupError``.

Acknowledgement receipts of our events are the exception to "one transaction
per input": they are written every ``DELIVERY_SAVE_INTERVAL`` in one
transaction (losing the last moment of them in a crash only means a member is
sent those events again), so an ack costs no fsync.

Storage pauses
--------------
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import nacl.utils
import trio

from node.crypto.keys import IdentityKey
from node.errors import (
    GroupError,
    KithError,
    StorageError,
    StoragePausedError,
    StorageUnavailableError,
)
from node.group import commands as C
from node.group.content import encode_content
from node.group.events import Event, EventId, GroupId
from node.group.member import Member
from node.group.member_io import (
    Ack,
    Announce,
    Authored,
    Effect,
    EraseContent,
    Events,
    Got,
    HistoryWanted,
    Input,
    Notify,
    Payload,
    Received,
    Refused,
    SaveCopy,
    SaveDelivery,
    SaveEquivocation,
    SaveEvent,
    SaveOwnHistory,
    SaveOwnKey,
    SavePeerKey,
    SaveReadMarks,
    Send,
    SendMany,
    SetContent,
    SetLeft,
    SetName,
    Tick,
    TypingSeen,
    Vector,
    Wake,
    Warn,
)
from node.group.member_state import Settings
from node.group.state import GroupCore
from node.ids import PeerId, short_id
from node.logs import RateLimitedLog, line_key
from node.service.files import FileService
from node.service.outbox import Outboxes
from node.store.db import EventRow, Store
from node.wire.messages import (
    AckMessage,
    EventsMessage,
    GotMessage,
    TypingMessage,
    VectorMessage,
    encode_message,
)

if TYPE_CHECKING:
    from node.service.links import PeerLinks

log = logging.getLogger("node.service.groups")  # one logger for the group service
_T = TypeVar("_T")

#: Delivery receipts (acks of our events) are saved in one transaction this often.
DELIVERY_SAVE_INTERVAL = 0.5
#: While storage is paused, the first and the longest wait between two tries (seconds).
RETRY_FIRST = 0.25
RETRY_MAX = 4.0
#: Peer messages held while storage is paused; later ones are dropped unacknowledged.
MAX_DEFERRED = 1024
#: What a refused command is told the node waits for, by reason.
_UNTIL = {"disk full": "space returns", "disk quota exceeded": "space returns",
          "disk I/O error": "the disk works again",
          "database locked by another program": "the database is free again"}


@dataclass(frozen=True, slots=True)
class TypingNotice:
    """``author`` is typing in ``group`` (ephemeral: streamed to followers, never stored)."""

    group: GroupId
    author: PeerId


Notice = Event | TypingNotice


class EffectDriver:
    def __init__(self, node: PeerLinks, store: Store) -> None:
        self.node = node
        self.store = store
        self.identity: IdentityKey = node.identity
        self.me = node.peer_id
        self.settings = Settings(read_receipts=node.config.read_receipts)
        self.groups: dict[GroupId, Member] = {}
        self.files: FileService | None = None  # attachments, set by GroupService
        self.outboxes = Outboxes(node)  # local sends wait here, not in a full queue
        self._watchers: dict[GroupId, list[trio.MemorySendChannel[Event]]] = {}
        self._notice_watchers: dict[GroupId, list[trio.MemorySendChannel[Notice]]] = {}
        self._unsaved_deliveries: list[tuple[GroupId, EventId, PeerId, float]] = []
        self._changed = trio.Event()
        self._wakes: dict[GroupId, float] = {}
        self._wake_changed = trio.Event()
        # Storage pauses (see the module docstring): why we are paused, since when, and
        # what waits, oldest first (the held batch, then inputs that came after it).
        self._paused: StorageUnavailableError | None = None
        self._paused_since = 0.0
        self._backlog: deque[Callable[[], object]] = deque()
        self._deferred = 0  # peer messages in the backlog
        self._deferred_ticks: set[GroupId] = set()
        self._pause_changed = trio.Event()
        self._storage_log = RateLimitedLog(log, interval=60.0)
        self._warn_log = RateLimitedLog(log)

    def _new_member(self, core: GroupCore, joined_at: float) -> Member:
        member = Member(self.identity, core, nacl.utils.random, joined_at=joined_at,
                        settings=self.settings)
        member.connected = set(self.node.connections)
        return member

    # -- inputs ----------------------------------------------------------------------

    def handle(self, group: Member, input: Input | C.Command,
               now: float | None = None) -> Event | None:
        """Feed ``group`` one input and run its effects; returns the event a command
        authored (``GroupError`` if the command was refused).

        While storage is paused a command is refused (``StoragePausedError``) and any
        other input waits (see the module docstring); None is returned for it.
        """
        if self._paused is not None:
            if isinstance(input, C.Command):
                raise self.storage_refusal()
            self._defer(group, input)
            return None
        return self._handle_now(group, input, now)

    def _handle_now(self, group: Member, input: Input | C.Command,
                    now: float | None = None) -> Event | None:
        command = isinstance(input, C.Command)
        authored = self._run(group, group.handle(input, time.time() if now is None else now),
                             local=command)
        if authored is None:  # held: storage paused on this very input
            if command:
                raise self.storage_refusal(kept=True)
            return None
        return authored[0] if authored else None

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

    # -- effects ---------------------------------------------------------------------

    def run_effects(self, group: Member, effects: list[Effect]) -> list[Event]:
        """Run one input's effects; returns the events it says we authored.

        If the store cannot write now, or storage is paused, the effects are held (module
        docstring) and nothing is returned yet.
        """
        if self._paused is not None:
            self._backlog.append(partial(self._run, group, effects))
            return []
        authored = self._run(group, effects)
        return [] if authored is None else authored

    def _run(self, group: Member, effects: list[Effect], *, local: bool = False,
             first: Callable[[], None] | None = None) -> list[Event] | None:
        """Run one input's effects: its rows in one transaction (after ``first()``, in the
        same transaction), then the rest. None if the rows could not be written now: then
        the effects are held and storage is paused. Inside the caller's own transaction,
        or with ``first``, the ``StorageUnavailableError`` is raised instead."""
        persist = [e for e in effects if isinstance(e, _PERSIST)]
        erased = False
        if persist or first is not None:
            try:
                with self.store.transaction():
                    if first is not None:
                        first()
                    for row in persist:
                        erased = self._persist(group, row) or erased
            except StorageUnavailableError as exc:
                if first is not None or self.store.in_transaction:
                    raise  # the caller's write: its call
                self._backlog.appendleft(partial(self._run, group, effects, local=local))
                self._pause(exc)
                return None
        if erased:
            try:
                self.store.checkpoint()
            except StorageError as exc:  # the next checkpoint takes the old pages
                log.warning("%s", exc)
        authored: list[Event] = []
        encoded: dict[int, bytes] = {}
        for effect in effects:
            if type(effect) is SaveDelivery:  # batched (the commonest: one per ack)
                assert isinstance(effect, SaveDelivery)
                self._unsaved_deliveries.append((group.id, effect.event, effect.member,
                                                 effect.at))
            elif isinstance(effect, Send):
                self._send(group, effect.peer, effect.payload, effect.kind, encoded, local)
            elif isinstance(effect, SendMany):
                for peer in effect.peers:
                    self._send(group, peer, effect.payload, effect.kind, encoded, local)
            elif isinstance(effect, Notify):
                self._notify(group, effect.events)
            elif isinstance(effect, TypingSeen):
                self._notify(group, [TypingNotice(group.id, effect.peer)])
            elif isinstance(effect, Warn):
                # A peer can repeat what makes a member warn: one line per kind of line
                # (ids and numbers aside) per interval, with the count held back.
                self._warn_log.log(line_key(effect.text), effect.level, "%s", effect.text)
            elif isinstance(effect, Wake):
                self._schedule(group.id, effect.at)
            elif isinstance(effect, Authored):
                authored.append(effect.event)
            elif isinstance(effect, Refused):
                raise GroupError(effect.reason)
        return authored

    def _persist(self, group: Member, effect: Effect) -> bool:
        """Write one row (inside the input's transaction); True if content was erased."""
        gid = group.id
        if isinstance(effect, SaveEvent):
            e = effect.event
            packed = encode_content(effect.content) if effect.content is not None else None
            self.store.add_event(EventRow(gid, e.id, e.author, e.seq, e.lamport, int(e.kind),
                                          e.raw, effect.received_at, effect.text, packed))
        elif isinstance(effect, SetContent):
            packed = encode_content(effect.content) if effect.content is not None else None
            self.store.set_content(effect.event, effect.text, packed)
        elif isinstance(effect, EraseContent):
            if self.files is not None:
                self.files.forget(group, effect.event)  # a deleted message's file goes too
            self.store.erase_content(effect.event)
            return True
        elif isinstance(effect, SaveOwnKey):
            self.store.save_own_key(gid, effect.epoch, effect.key, effect.recipients)
        elif isinstance(effect, SaveOwnHistory):
            self.store.save_own_history(gid, effect.epoch, effect.key)
        elif isinstance(effect, SavePeerKey):
            self.store.save_peer_key(gid, effect.author, effect.epoch, effect.state)
        elif isinstance(effect, SaveCopy):
            self.store.add_copy(gid, effect.event, effect.recipient, effect.blob)
        elif isinstance(effect, SaveEquivocation):
            self.store.add_equivocation(gid, effect.author, effect.seq, effect.first,
                                        effect.second, effect.at)
        elif isinstance(effect, SetLeft):
            self.store.set_group_left(gid, effect.left)
        elif isinstance(effect, SetName):
            self.store.set_group_name(gid, effect.name)
        elif isinstance(effect, SaveReadMarks):
            self.store.set_read_marks(gid, dict(effect.marks))
        return False

    def _send(self, group: Member, peer: PeerId, payload: Payload, kind: str,
              encoded: dict[int, bytes], local: bool) -> None:
        conn = self.node.connections.get(peer)
        if conn is None:
            return
        data = encoded.get(id(payload))
        if data is None:
            data = encoded[id(payload)] = encode_message(_wire(group.id, payload))
        if self.outboxes.send(conn, data, local=local) and kind == "message":
            assert isinstance(payload, Events)
            counters = group.counters.get(payload.events[0].id)
            if counters is not None:
                counters.bytes_out += len(data)

    def _schedule(self, group: GroupId, at: float) -> None:
        if at < self._wakes.get(group, float("inf")):
            self._wakes[group] = at
            self._wake_changed.set()

    async def _timers(self) -> None:
        while True:
            if not self._wakes:
                self._wake_changed = trio.Event()
                await self._wake_changed.wait()
                continue
            gid, at = min(self._wakes.items(), key=lambda kv: kv[1])
            self._wake_changed = trio.Event()
            with trio.move_on_after(max(0.0, at - time.time())):
                await self._wake_changed.wait()
                continue
            del self._wakes[gid]
            group = self.groups.get(gid)
            if group is not None:
                self.handle(group, Tick())

    def save_deliveries(self) -> bool:
        """Write the delivery receipts gathered since last time, in one transaction.

        False if the store cannot write now: the receipts are kept for the next try and
        storage is paused.
        """
        if not self._unsaved_deliveries:
            return True
        pending, self._unsaved_deliveries = self._unsaved_deliveries, []
        try:
            with self.store.transaction():
                for row in pending:
                    self.store.add_delivery(*row)
        except StorageUnavailableError as exc:
            self._unsaved_deliveries[:0] = pending
            self._pause(exc)
            return False
        return True

    async def _save_deliveries(self) -> None:
        """The writer beat, and the outboxes' tasks (started by ``GroupService.run``).

        Saves delivery receipts every ``DELIVERY_SAVE_INTERVAL``; while storage is
        paused, tries the held writes again with backoff instead.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outboxes.run)
                while True:
                    if self._paused is None:
                        with trio.move_on_after(DELIVERY_SAVE_INTERVAL):
                            await self._pause_changed.wait()
                        if self._paused is None:
                            self.save_deliveries()
                        continue
                    delay = RETRY_FIRST
                    while True:
                        await trio.sleep(delay)
                        if self.retry_storage():
                            break
                        delay = min(2 * delay, RETRY_MAX)
        finally:
            self.save_deliveries()

    # -- storage pauses ----------------------------------------------------------------

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
        # A locked database fails the try at once instead of holding up the node.
        with self.store.busy_timeout(0):
            if not self.save_deliveries():
                return False
            while self._backlog:
                item = self._backlog.popleft()
                try:
                    item()  # a write that fails again holds its batch at the head again
                except KithError as exc:  # a refusal or a bad input: that input's own end
                    log.warning("after the storage pause: %s", exc)
                if self._paused is not None:
                    return False
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

    def offer_history(self, group: Member, peer: PeerId) -> None:
        """``peer`` may join ``group`` and asked for its events: send them (as the
        member's core decides; deferred like any input while storage is paused)."""
        self.handle(group, HistoryWanted(peer))

    async def wait_for_room(self) -> None:
        """Wait until every peer can take more of our messages (local senders, before
        authoring: ``node.service.outbox``)."""
        await self.outboxes.room_for_all()

    def notify(self, group: Member, events: Sequence[Notice] = ()) -> None:
        """Tell watchers of ``group`` (and whoever waits in ``wait_until``)."""
        self._notify(group, events)

    def _notify(self, group: Member, events: Sequence[Notice]) -> None:
        plain = [e for e in events if isinstance(e, Event)]
        if plain and self.files is not None:
            try:
                self.files.notice(group, plain)  # files in newly readable messages
            except StorageError as exc:  # tracked again when the node next starts
                log.warning("%s", exc)
        _send_all(self._watchers.get(group.id, []), plain)
        _send_all(self._notice_watchers.get(group.id, []), events)
        self.notify_all()

    def watch(self, group: Member) -> trio.MemoryReceiveChannel[Event]:
        """New events of ``group`` as they are delivered."""
        send, receive = trio.open_memory_channel[Event](1024)
        self._watchers.setdefault(group.id, []).append(send)
        return receive

    def watch_notices(self, group: Member) -> trio.MemoryReceiveChannel[Notice]:
        """New events of ``group`` and typing notices, as they happen."""
        send, receive = trio.open_memory_channel[Notice](1024)
        self._notice_watchers.setdefault(group.id, []).append(send)
        return receive

    def notify_all(self) -> None:
        """Wake whoever waits in ``wait_until``."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()



#: Rows written in the input's transaction (SaveDelivery is set aside and batched).
_PERSIST = (SaveEvent, SetContent, EraseContent, SaveOwnKey, SaveOwnHistory, SavePeerKey,
            SaveCopy, SaveEquivocation, SetLeft, SetName, SaveReadMarks)


def _wire(group: GroupId, payload: Payload) -> EventsMessage | AckMessage | GotMessage \
        | VectorMessage | TypingMessage:
    if isinstance(payload, Events):
        return EventsMessage(group, tuple(e.raw for e in payload.events), payload.copies,
                             sync=payload.sync, held=payload.held)
    if isinstance(payload, Ack):
        return AckMessage(group, payload.ids, payload.kind)
    if isinstance(payload, Got):
        return GotMessage(group, payload.upto)
    if isinstance(payload, Vector):
        return VectorMessage(group, payload.vector, payload.want)
    return TypingMessage(group)


def _send_all(watchers: list[trio.MemorySendChannel[_T]], items: Sequence[_T]) -> None:
    for watcher in list(watchers):
        for item in items:
            try:
                watcher.send_nowait(item)
            except trio.WouldBlock:  # a follower that fell far behind: end its stream
                watcher.close()
                watchers.remove(watcher)
                break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                watchers.remove(watcher)
                break
