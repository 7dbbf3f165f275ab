"""``EffectDriver``: runs member-core effects on a node (trio; the base of ``GroupService``).

One input's effects run in this order: every ``Persist`` in a store
transaction; then the sends, through the per-peer queues (``send_nowait``: a
slow member never holds up the others; a payload shared by many peers is
encoded once; consecutive live messages of a group to one peer go as one,
``node.service.send_batch``; a local command's sends wait in
``node.service.outbox`` rather than fill a queue); then watchers, log lines
(``Warn``) and timers (``Wake``: the member is ticked at that time).
``Refused`` becomes a ``GroupError``.

**Group commit.** Inputs are not committed one by one: while ``run`` serves
the node, an input's effects join the open *batch*, and the committer task
stores the whole batch in one transaction once nothing more is ready to join
(other tasks ran ``QUIET_STEPS`` steps without adding to it), once it stores
``MAX_BATCH_EVENTS`` events (watchers hear of them all at once), or
``BATCH_WINDOW`` after its first input; only then do any of the batch's sends,
watchers and timers run, in input order. So a burst of incoming messages, or
of our own messages, costs one commit (one fsync) and nothing is sent,
acknowledged or relayed before it is stored. A command returns the event it
authored at once; ``committed()`` waits until it is stored (the control
socket answers only then). Only texts (``SendText``) are group-committed that
way, as they come in bursts; any other command is stored before it returns,
as before (a file's transfer, a membership change: callers look at once).
Whatever must run alone (a group's creation with its row, startup, the replay
after a storage pause) first commits the open batch, then runs in its own
transaction as before.

Acknowledgement receipts of our events are the exception: they are written
every ``DELIVERY_SAVE_INTERVAL`` in one transaction (losing the last moment of
them in a crash only means a member is sent those events again), so an ack
costs no fsync.

A write that fails for a reason that passes pauses storage
(``node.service.storage_pause``): the batch is held, not dropped, and goes
out once stored.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import nacl.utils
import trio

from node.crypto.keys import IdentityKey
from node.errors import GroupError, StorageError, StorageUnavailableError
from node.group import commands as C
from node.group.content import encode_content
from node.group.events import Event, EventId, GroupId
from node.group.member import Member
from node.group.member_io import (
    Authored,
    Effect,
    EraseContent,
    HistoryWanted,
    Input,
    Notify,
    Payload,
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
    Wake,
    Warn,
)
from node.group.member_state import Settings
from node.group.relaying import Relay
from node.group.state import GroupCore
from node.ids import PeerId
from node.logs import RateLimitedLog, line_key
from node.service.files import FileService
from node.service.outbox import Outboxes
from node.service.send_batch import SendBatch, wire_message
from node.service.storage_pause import RETRY_FIRST, RETRY_MAX, StoragePauses
from node.service.watchers import TypingNotice, Watchers
from node.store.db import EventRow, Store
from node.wire.messages import encode_message

if TYPE_CHECKING:
    from node.service.links import PeerLinks

log = logging.getLogger("node.service.groups")  # one logger for the group service

#: Delivery receipts (acks of our events) are saved in one transaction this often.
DELIVERY_SAVE_INTERVAL = 0.5
#: An input waits at most this long for others to share its transaction (group commit).
BATCH_WINDOW = 0.01
#: ...and a batch holds at most this many inputs. It is stored once it did not grow while
#: the other tasks ran this many steps (a receiver takes two to read a message off TCP).
MAX_BATCH = 512
QUIET_STEPS = 3
#: ...or once it stores this many events (its watchers are told of them all at once).
MAX_BATCH_EVENTS = 512

_Held = tuple[Member, list[Effect], bool]  # an input's effects, and whether it was local


class EffectDriver(Watchers, StoragePauses):
    def __init__(self, node: PeerLinks, store: Store) -> None:
        super().__init__()
        self.node = node
        self.store = store
        self.identity: IdentityKey = node.identity
        self.me = node.peer_id
        self.settings = Settings(read_receipts=node.config.read_receipts,
                                 fanout=node.config.fanout)
        self.groups: dict[GroupId, Member] = {}
        self.files: FileService | None = None  # attachments, set by GroupService
        self.outboxes = Outboxes(node)  # local sends wait here, not in a full queue
        self._unsaved_deliveries: list[tuple[GroupId, EventId, PeerId, float]] = []
        self._wakes: list[tuple[float, GroupId]] = []  # a heap
        self._wake_set: set[tuple[float, GroupId]] = set()
        self._wake_changed = trio.Event()
        # Group commit (module docstring): the open batch, and who waits on it.
        self._batch: list[_Held] = []
        self._batch_rows = 0  # events it stores
        self._batch_ready = trio.Event()  # set when a batch opens
        self._stored = trio.Event()  # set (and replaced) whenever a batch was stored
        self._committer = False  # the committer task runs: inputs may wait in a batch
        self._warn_log = RateLimitedLog(log)

    def _new_member(self, core: GroupCore, joined_at: float) -> Member:
        config = self.node.config
        member = (Relay(self.identity, core, nacl.utils.random, joined_at=joined_at,
                        settings=self.settings, budget=config.relay_budget,
                        expiry=config.relay_expiry) if config.relay
                  else Member(self.identity, core, nacl.utils.random, joined_at=joined_at,
                              settings=self.settings))
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
        if command and not isinstance(input, C.SendText) and authored is not None \
                and not self.commit():
            authored = None  # (only texts come in bursts: other commands are stored now)
        if authored is None:  # held: storage paused on this very input
            if command:
                raise self.storage_refusal(kept=True)
            return None
        return authored[0] if authored else None

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
        """Run one input's effects; returns the events it says we authored.

        While the committer runs, they join the open batch (module docstring). Otherwise
        (or with ``first``, which must share their transaction) the open batch is stored
        first, then they run at once: their rows in one transaction (after ``first()``),
        then the rest. None if the rows could not be written now: then the effects are
        held and storage is paused. Inside the caller's own transaction, or with
        ``first``, the ``StorageUnavailableError`` is raised instead."""
        if (self._committer and first is None and not self._replaying
                and not self.store.in_transaction):
            for effect in effects:
                if type(effect) is Refused:  # (a refusal comes alone: nothing to store)
                    assert isinstance(effect, Refused)
                    raise GroupError(effect.reason)
            self._batch.append((group, effects, local))
            self._batch_rows += sum(1 for e in effects if type(e) is SaveEvent)
            if len(self._batch) == 1:
                self._batch_ready.set()
            elif len(self._batch) >= MAX_BATCH or self._batch_rows >= MAX_BATCH_EVENTS:
                self.commit()
            return [e.event for e in effects if isinstance(e, Authored)]
        if not self.commit():  # what waits goes first; if it cannot be stored, this waits too
            if first is not None or self.store.in_transaction:
                assert self._paused is not None
                raise self._paused
            self._backlog.append(partial(self._run, group, effects, local=local))
            return None
        persist = [e for e in effects if isinstance(e, _PERSIST)]
        erased = False
        if persist or first is not None:
            try:
                with self.store.transaction():
                    if first is not None:
                        first()
                    erased = self._persist_all([(group, row) for row in persist])
            except StorageUnavailableError as exc:
                if first is not None or self.store.in_transaction:
                    raise  # the caller's write: its call
                self._backlog.appendleft(partial(self._run, group, effects, local=local))
                self._pause(exc)
                return None
        if erased:
            self._checkpoint()
        sends = SendBatch()
        authored = self._after(group, effects, local, sends)
        sends.flush(self._encode, self._deliver)
        return authored

    def commit(self) -> bool:
        """Store the open batch now, then run its sends and the rest (in input order);
        False if it could not be stored (then it is held and storage is paused)."""
        batch, self._batch = self._batch, []
        self._batch_rows = 0
        if not batch:
            return self._paused is None
        self._batch_ready = trio.Event()
        return self._commit(batch)

    def _commit(self, batch: list[_Held]) -> bool:
        erased = False
        rows = _latest_keys([(group, row) for group, effects, _ in batch
                             for row in effects if isinstance(row, _PERSIST)])
        try:
            if rows:  # (acks, vectors and the like store nothing: no transaction)
                with self.store.transaction():
                    erased = self._persist_all(rows)
        except StorageUnavailableError as exc:
            self._backlog.appendleft(partial(self._commit, batch))
            self._pause(exc)
            return False
        if erased:
            self._checkpoint()
        sends = SendBatch()  # (merged per peer: node.service.send_batch)
        for group, effects, local in batch:
            self._after(group, effects, local, sends)
        sends.flush(self._encode, self._deliver)
        self._stored.set()
        self._stored = trio.Event()
        return True

    async def _commit_loop(self) -> None:
        """The committer: store each batch once nothing more is ready to join it."""
        self._committer = True
        try:
            while True:
                await self._batch_ready.wait()
                deadline = trio.current_time() + BATCH_WINDOW
                size, still = 0, 0
                while self._batch and still < QUIET_STEPS and trio.current_time() < deadline:
                    await trio.lowlevel.checkpoint()  # let whoever is ready add to it
                    still = still + 1 if len(self._batch) == size else 0
                    size = len(self._batch)
                self.commit()
        finally:
            self._committer = False
            self.commit()  # (stopping: what is open is stored now)

    async def committed(self) -> None:
        """Wait until everything handled so far is stored and sent (or held: then a
        ``StoragePausedError`` says it goes out once stored)."""
        if not self._batch:
            return
        while self._batch and self._committer:
            await self._stored.wait()
        self.commit_now()

    def pending(self) -> bool:
        """Is a batch open (handled, not stored yet)?"""
        return bool(self._batch)

    def commit_now(self) -> None:
        """Store the open batch at once (synchronous callers that must know it is stored:
        the Python API); ``StoragePausedError`` if it is held instead."""
        if (self._batch and not self.commit()) or self._paused is not None:
            raise self.storage_refusal(kept=True)

    def _checkpoint(self) -> None:
        try:
            self.store.checkpoint()
        except StorageError as exc:  # the next checkpoint takes the old pages
            log.warning("%s", exc)

    def _after(self, group: Member, effects: list[Effect], local: bool,
               sends: SendBatch) -> list[Event]:
        """An input's effects once its rows are stored: sends, watchers, log lines, timers."""
        authored: list[Event] = []
        for effect in effects:
            if isinstance(effect, SaveDelivery):  # batched (the commonest: one per ack)
                if not self._unsaved_deliveries:  # wake the writer (see _save_deliveries)
                    self._pause_changed, woken = trio.Event(), self._pause_changed
                    woken.set()
                self._unsaved_deliveries.append((group.id, effect.event, effect.member,
                                                 effect.at))
            elif isinstance(effect, Send):
                sends.add(group, effect.peer, effect.payload, effect.kind, local)
            elif isinstance(effect, SendMany):
                for peer in effect.peers:
                    sends.add(group, peer, effect.payload, effect.kind, local)
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

    def _persist_all(self, rows: list[tuple[Member, Effect]]) -> bool:
        """Write ``rows`` in order, each run of events as one statement (``_persist``)."""
        erased = False
        events: list[EventRow] = []
        for group, row in rows:
            if isinstance(row, SaveEvent):
                events.append(_event_row(group, row))
                continue
            if events:
                self.store.add_events(events)
                events = []
            erased = self._persist(group, row) or erased
        if events:
            self.store.add_events(events)
        return erased

    def _persist(self, group: Member, effect: Effect) -> bool:
        """Write one row (inside the input's transaction); True if content was erased."""
        gid = group.id
        if isinstance(effect, SaveEvent):
            self.store.add_event(_event_row(group, effect))
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

    def _encode(self, group: Member, payload: Payload) -> bytes:
        return encode_message(wire_message(group.id, payload))

    def _deliver(self, group: Member, peer: PeerId, data: bytes, local: bool,
                 live: tuple[Event, ...]) -> None:
        conn = self.node.connections.get(peer)
        if conn is None:
            return
        if self.outboxes.send(conn, data, local=local) and live:
            share, rest = divmod(len(data), len(live))  # (merged: an equal share each)
            for i, event in enumerate(live):
                counters = group.counters.get(event.id)
                if counters is not None:
                    counters.bytes_out += share + (rest if i == 0 else 0)

    def _schedule(self, group: GroupId, at: float) -> None:
        """Tick ``group`` at ``at``: every time asked for gets a tick at or after it (a
        later wake of the same group is not dropped because an earlier one is pending)."""
        if (at, group) not in self._wake_set:
            self._wake_set.add((at, group))
            heapq.heappush(self._wakes, (at, group))
            if self._wakes[0] == (at, group):
                self._wake_changed.set()

    async def _timers(self) -> None:
        while True:
            if not self._wakes:
                self._wake_changed = trio.Event()
                await self._wake_changed.wait()
                continue
            at = self._wakes[0][0]
            self._wake_changed = trio.Event()
            with trio.move_on_after(max(0.0, at - time.time())):
                await self._wake_changed.wait()
                continue
            due: dict[GroupId, float] = {}  # one tick per group for all that is due
            while self._wakes and self._wakes[0][0] <= max(at, time.time()):
                entry = heapq.heappop(self._wakes)
                self._wake_set.discard(entry)
                due[entry[1]] = max(due.get(entry[1], 0.0), entry[0])
            for gid, latest in due.items():
                group = self.groups.get(gid)
                if group is not None:  # (trio's clock may run a little ahead of the wall
                    # clock: the tick is at least the time asked for, or it would not be due)
                    self.handle(group, Tick(), max(time.time(), latest))

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

        Saves receipts ``DELIVERY_SAVE_INTERVAL`` after the first unsaved one (none: it
        sleeps); while storage is paused, retries the held writes with backoff."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outboxes.run)
                nursery.start_soon(self._commit_loop)
                while True:
                    if self._paused is None:
                        idle = not self._unsaved_deliveries  # woken by the first one
                        with trio.move_on_after(float("inf") if idle else DELIVERY_SAVE_INTERVAL):
                            await self._pause_changed.wait()
                        if self._paused is None and not idle:
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

    def offer_history(self, group: Member, peer: PeerId) -> None:
        """``peer`` may join ``group`` and asked for its events: send them (as the
        member's core decides; deferred like any input while storage is paused)."""
        self.handle(group, HistoryWanted(peer))

    async def wait_for_room(self) -> None:
        """Wait until every peer can take more of our messages (local senders, before
        authoring: ``node.service.outbox``)."""
        await self.outboxes.room_for_all()


#: Rows written in the input's transaction (SaveDelivery is set aside and batched).
_PERSIST = (SaveEvent, SetContent, EraseContent, SaveOwnKey, SaveOwnHistory, SavePeerKey,
            SaveCopy, SaveEquivocation, SetLeft, SetName, SaveReadMarks)


def _event_row(group: Member, effect: SaveEvent) -> EventRow:
    e = effect.event
    packed = encode_content(effect.content) if effect.content is not None else None
    return EventRow(group.id, e.id, e.author, e.seq, e.lamport, int(e.kind), e.raw,
                    effect.received_at, effect.text, packed)


def _latest_keys(rows: list[tuple[Member, Effect]]) -> list[tuple[Member, Effect]]:
    """``rows`` less the key states a later row of the same batch replaces (each is an
    upsert of the whole state: within one transaction only the last one counts, and a
    burst would otherwise write a sender's chain state once per message)."""
    last: dict[tuple[object, ...], int] = {}
    for i, (group, row) in enumerate(rows):
        if type(row) is SavePeerKey:
            last[(group.id, row.author, row.epoch)] = i
        elif type(row) is SaveOwnKey:
            last[(group.id,)] = i
    if len(last) == sum(1 for _, r in rows if type(r) in (SavePeerKey, SaveOwnKey)):
        return rows  # nothing replaced
    keep = set(last.values())
    return [(g, r) for i, (g, r) in enumerate(rows)
            if type(r) not in (SavePeerKey, SaveOwnKey) or i in keep]
