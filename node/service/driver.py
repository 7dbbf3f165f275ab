"""``EffectDriver``: runs member-core effects on a node (trio; the base of ``GroupService``).

One input's effects run in this order: every ``Persist`` in **one** store
transaction; then the sends, through the per-peer queues (``send_nowait``: a
slow member never holds up the others; a payload shared by many peers is
encoded once); then watchers, log lines (``Warn``) and timers (``Wake``: the
member is ticked at that time). ``Refused`` becomes a ``GroupError``.

Acknowledgement receipts of our events are the exception to "one transaction
per input": they are written every ``DELIVERY_SAVE_INTERVAL`` in one
transaction (losing the last moment of them in a crash only means a member is
sent those events again), so an ack costs no fsync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import nacl.utils
import trio

from node.crypto.keys import IdentityKey
from node.errors import GroupError
from node.group import commands as C
from node.group.content import encode_content
from node.group.events import Event, EventId, GroupId
from node.group.member import Member
from node.group.member_io import (
    Ack,
    Authored,
    Effect,
    EraseContent,
    Events,
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
    Vector,
    Wake,
    Warn,
)
from node.group.member_state import Settings
from node.group.state import GroupCore
from node.ids import PeerId
from node.service.files import FileService
from node.store.db import EventRow, Store
from node.wire.messages import (
    AckMessage,
    EventsMessage,
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
        self._watchers: dict[GroupId, list[trio.MemorySendChannel[Event]]] = {}
        self._notice_watchers: dict[GroupId, list[trio.MemorySendChannel[Notice]]] = {}
        self._unsaved_deliveries: list[tuple[GroupId, EventId, PeerId, float]] = []
        self._changed = trio.Event()
        self._wakes: dict[GroupId, float] = {}
        self._wake_changed = trio.Event()

    def _new_member(self, core: GroupCore, joined_at: float) -> Member:
        member = Member(self.identity, core, nacl.utils.random, joined_at=joined_at,
                        settings=self.settings)
        member.connected = set(self.node.connections)
        return member

    def handle(self, group: Member, input: Input | C.Command,
               now: float | None = None) -> Event | None:
        """Feed ``group`` one input and run its effects; returns the event a command
        authored (``GroupError`` if the command was refused)."""
        authored = self.run_effects(group, group.handle(input, time.time() if now is None
                                                        else now))
        return authored[0] if authored else None

    def run_effects(self, group: Member, effects: list[Effect]) -> list[Event]:
        """Run one input's effects; returns the events it says we authored."""
        authored: list[Event] = []
        persist = []
        for effect in effects:
            if type(effect) is SaveDelivery:  # batched (the commonest: one per ack)
                assert isinstance(effect, SaveDelivery)
                self._unsaved_deliveries.append((group.id, effect.event, effect.member,
                                                 effect.at))
            elif isinstance(effect, _PERSIST):
                persist.append(effect)
        erased = False
        if persist:
            with self.store.transaction():
                for row in persist:
                    erased = self._persist(group, row) or erased
        if erased:
            self.store.checkpoint()
        encoded: dict[int, bytes] = {}
        for effect in effects:
            if isinstance(effect, Send):
                self._send(group, effect.peer, effect.payload, effect.kind, encoded)
            elif isinstance(effect, SendMany):
                for peer in effect.peers:
                    self._send(group, peer, effect.payload, effect.kind, encoded)
            elif isinstance(effect, Notify):
                self._notify(group, effect.events)
            elif isinstance(effect, TypingSeen):
                self._notify(group, [TypingNotice(group.id, effect.peer)])
            elif isinstance(effect, Warn):
                log.log(effect.level, "%s", effect.text)
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
              encoded: dict[int, bytes]) -> None:
        conn = self.node.connections.get(peer)
        if conn is None:
            return
        data = encoded.get(id(payload))
        if data is None:
            data = encoded[id(payload)] = encode_message(_wire(group.id, payload))
        if conn.send_nowait(data) and kind == "message":
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

    def save_deliveries(self) -> None:
        """Write the delivery receipts gathered since last time, in one transaction."""
        if not self._unsaved_deliveries:
            return
        pending, self._unsaved_deliveries = self._unsaved_deliveries, []
        with self.store.transaction():
            for row in pending:
                self.store.add_delivery(*row)

    async def _save_deliveries(self) -> None:
        try:
            while True:
                await trio.sleep(DELIVERY_SAVE_INTERVAL)
                self.save_deliveries()
        finally:
            self.save_deliveries()

    def push(self, group: Member, peer: PeerId, events: list[Event]) -> None:
        """Send ``peer`` these events now (catch-up batches)."""
        group.out, group.now = [], time.time()
        group.push(peer, events)
        effects, group.out = group.out, []
        self.run_effects(group, effects)

    def notify(self, group: Member, events: Sequence[Notice] = ()) -> None:
        """Tell watchers of ``group`` (and whoever waits in ``wait_until``)."""
        self._notify(group, events)

    def _notify(self, group: Member, events: Sequence[Notice]) -> None:
        plain = [e for e in events if isinstance(e, Event)]
        if plain and self.files is not None:
            self.files.notice(group, plain)  # files in newly readable messages
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


def _wire(group: GroupId, payload: Payload) -> EventsMessage | AckMessage | VectorMessage \
        | TypingMessage:
    if isinstance(payload, Events):
        return EventsMessage(group, tuple(e.raw for e in payload.events), payload.copies,
                             sync=payload.sync)
    if isinstance(payload, Ack):
        return AckMessage(group, payload.ids)
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
