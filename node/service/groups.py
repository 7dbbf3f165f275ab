"""``GroupService``: runs the member cores of a node's groups (trio driver).

The protocol itself is in ``node.group.member`` (pure, shared with the
simulator). This driver only moves bytes, time and rows:

* it turns peer messages into ``Received`` inputs, channel changes into
  ``PeerUp``, the clock into ``Tick`` and ``Announce``, and user operations
  into commands, reading the wall clock and passing it in;
* it runs each input's effects: every ``Persist`` in **one** store
  transaction, then the sends through the per-peer queues (``send_nowait``:
  a slow member never holds up the others), then watchers, log lines and
  timers. Acknowledgement receipts of our events are the exception: they are
  written in one transaction every ``DELIVERY_SAVE_INTERVAL`` (losing the
  last moment of them in a crash only means a member is sent those events
  again);
* it holds events of groups we are not in, in a small bounded side core: if
  they make us a member (someone added us), the group is adopted and stored,
  otherwise they are dropped with one log line.
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
from node.errors import GroupError, RemoteProtocolError
from node.group import commands as C
from node.group.bodies import Body, Role
from node.group.content import Content, Thread, decode_content, encode_content
from node.group.events import Event, EventError, EventId, GroupId, Kind, decode_event
from node.group.member import Member
from node.group.member_io import (
    Ack,
    Announce,
    Authored,
    Effect,
    EraseContent,
    Events,
    Input,
    Notify,
    Payload,
    PeerUp,
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
    SetContent,
    SetLeft,
    SetName,
    Tick,
    Typing,
    TypingSeen,
    Vector,
    Wake,
    Warn,
)
from node.group.member_state import TYPING_SHOWN, Settings, display_text
from node.group.state import GroupCore
from node.ids import PeerId, short_id
from node.service.files import FileService
from node.service.open_groups import OpenGroups
from node.store.db import EventRow, GroupRow, Store
from node.wire.messages import (
    AckMessage,
    ChunkMessage,
    EventsMessage,
    NoChunkMessage,
    TypingMessage,
    VectorMessage,
    WantMessage,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    from node.service.links import PeerLink, PeerLinks

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Most unknown groups whose events we hold while waiting to see if we were added,
#: and most events held per such group (an invitation is history enough to adopt).
MAX_PENDING_GROUPS = 8
MAX_PENDING_EVENTS = 1024
#: Delivery receipts (acks of our events) are saved in one transaction this often.
DELIVERY_SAVE_INTERVAL = 0.5

#: A group as this node runs it (the member core; kept under this name for the API).
Group = Member

__all__ = [
    "TYPING_SHOWN",
    "Group",
    "GroupError",
    "GroupService",
    "Notice",
    "TypingNotice",
    "display_text",
]


@dataclass(frozen=True, slots=True)
class TypingNotice:
    """``author`` is typing in ``group`` (ephemeral: streamed to followers, never stored)."""

    group: GroupId
    author: PeerId


Notice = Event | TypingNotice


class GroupService:
    def __init__(self, node: PeerLinks, store: Store) -> None:
        self.node = node
        self.store = store
        self.identity: IdentityKey = node.identity
        self.me = node.peer_id
        self.settings = Settings(read_receipts=node.config.read_receipts)
        self.groups: dict[GroupId, Member] = {}
        self._pending: dict[GroupId, GroupCore] = {}
        self._watchers: dict[GroupId, list[trio.MemorySendChannel[Event]]] = {}
        self._notice_watchers: dict[GroupId, list[trio.MemorySendChannel[Notice]]] = {}
        self._unsaved_deliveries: list[tuple[GroupId, EventId, PeerId, float]] = []
        self._changed = trio.Event()
        self._wakes: dict[GroupId, float] = {}
        self._wake_changed = trio.Event()
        self.files: FileService | None = None  # attachments (node.service.files), after _load
        self.open: OpenGroups = OpenGroups(self)  # open groups: announcing, joining, bans
        self._load()
        self.files = FileService(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work: anti-entropy, timers, coalesced receipts and deliveries."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receipts)
            nursery.start_soon(self._save_deliveries)
            nursery.start_soon(self._announce)
            nursery.start_soon(self._timers)
            if self.files is not None:
                await nursery.start(self.files.run)
            task_status.started()

    # -- start-up --

    def _new_member(self, core: GroupCore, joined_at: float) -> Member:
        member = Member(self.identity, core, nacl.utils.random, joined_at=joined_at,
                        settings=self.settings)
        member.connected = set(self.node.connections)
        return member

    def _load(self) -> None:
        for row in self.store.groups():
            member = self._new_member(GroupCore(row.id), row.joined_at)
            rows = []
            for ev in self.store.events(row.id):
                content: Content | None = None
                if ev.content is not None:
                    try:
                        content = decode_content(ev.content)
                    except EventError as exc:
                        log.warning("stored content of %s is unreadable: %s",
                                    ev.id.hex()[:12], exc)
                rows.append((decode_event(ev.raw), ev.received_at, ev.text, content))
            own_copies: dict[EventId, dict[PeerId, bytes]] = {}
            copies: dict[EventId, bytes] = {}
            if row.mode == "pairwise":
                for ev in self.store.events(row.id):
                    if ev.kind != int(Kind.MESSAGE):
                        continue
                    for recipient, blob in self.store.copies(ev.id).items():
                        if ev.author == self.me:
                            own_copies.setdefault(ev.id, {})[recipient] = blob
                        elif recipient == self.me:
                            copies[ev.id] = blob
            effects = member.restore_from(
                rows, self.store.own_key(row.id), self.store.own_history(row.id),
                self.store.peer_keys(row.id), self.store.deliveries(row.id), copies,
                own_copies, self.store.read_marks(row.id))
            member.notify_muted = self.store.notify_muted(row.id)
            self.groups[row.id] = member
            self._apply(member, effects)  # a delete is final, also after a crash
        if self.groups:
            log.info("loaded %d group(s) from %s", len(self.groups), self.store.path)

    # -- running a member's effects --

    def handle(self, group: Member, input: Input | C.Command,
               now: float | None = None) -> Event | None:
        """Feed ``group`` one input and run its effects; returns the event a command
        authored (``GroupError`` if the command was refused)."""
        effects = group.handle(input, time.time() if now is None else now)
        return self._apply(group, effects)

    def _apply(self, group: Member, effects: list[Effect]) -> Event | None:
        authored: Event | None = None
        persist = [e for e in effects if isinstance(e, _PERSIST)]
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
                self._send(group, effect, encoded)
            elif isinstance(effect, Notify):
                self._notify(group, effect.events)
            elif isinstance(effect, TypingSeen):
                self._notify(group, [TypingNotice(group.id, effect.peer)])
            elif isinstance(effect, Warn):
                log.log(effect.level, "%s", effect.text)
            elif isinstance(effect, Wake):
                self._schedule(group.id, effect.at)
            elif isinstance(effect, Authored):
                authored = effect.event
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
        elif isinstance(effect, SaveDelivery):
            self._unsaved_deliveries.append((gid, effect.event, effect.member, effect.at))
        return False

    def _send(self, group: Member, send: Send, encoded: dict[int, bytes]) -> None:
        conn = self.node.connections.get(send.peer)
        if conn is None:
            return
        data = encoded.get(id(send.payload))
        if data is None:
            data = encoded[id(send.payload)] = encode_message(_wire(group.id, send.payload))
        if conn.send_nowait(data) and send.kind == "message":
            assert isinstance(send.payload, Events)
            counters = group.counters.get(send.payload.events[0].id)
            if counters is not None:
                counters.bytes_out += len(data)

    # -- timers --

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

    async def _announce(self) -> None:
        """Every ``sync_interval``, exchange version vectors with connected members."""
        while True:
            await trio.sleep(self.node.config.sync_interval)
            for group in list(self.groups.values()):
                self.handle(group, Announce())

    async def _receipts(self) -> None:
        """Send read receipts at most every ``receipt_interval``: one small event per burst.

        The same beat ends timed mutes whose end our clock has passed (as an admin).
        """
        while True:
            await trio.sleep(self.node.config.receipt_interval)
            self._flush_receipts()
            self.expire_mutes(time.time())
            self.open.expire_bans(time.time())

    def _flush_receipts(self) -> None:
        for group in list(self.groups.values()):
            if group.unread_receipt:
                self.handle(group, Tick())

    def expire_mutes(self, now: float) -> list[Event]:
        """As owner or admin, UNMUTE the members whose timed mute ended by our clock."""
        unmuted: list[Event] = []
        for group in list(self.groups.values()):
            before = len(group.own_ids)
            self.handle(group, C.ExpireMutes(), now)
            if len(group.own_ids) > before:
                unmuted += [e for e in group.core.ordered()[-(len(group.own_ids) - before):]]
        return unmuted

    # -- user operations --

    def create(
        self, name: str, mode: str = "private", max_members: int = 500,
        share_history: bool = False, policy: str = "",
    ) -> Member:
        now = time.time()
        group, effects = Member.found(self.identity, nacl.utils.random, now, name, mode,
                                      max_members, share_history, policy, self.settings)
        group.connected = set(self.node.connections)
        with self.store.transaction():
            self.store.add_group(GroupRow(group.id, name, mode, now))
            self.groups[group.id] = group
            self._apply(group, effects)
        log.info("created %s group %s (%s)", mode, name, group.id.hex()[:12])
        return group

    def adopt(self, core: GroupCore, sender: PeerId, events: Sequence[Event],
              copies: dict[EventId, bytes]) -> Member:
        """Start running a group someone else made (we were added, or we joined it)."""
        now = time.time()
        group = self._new_member(GroupCore(core.group_id), now)
        with self.store.transaction():
            self.store.add_group(GroupRow(core.group_id, core.state.name, core.state.mode, now))
        self.groups[core.group_id] = group
        # its own transaction: a DELETE in the history checkpoints the WAL after it
        self.handle(group, Received(sender, Events(tuple(events), tuple(copies.items()))), now)
        return group

    def find(self, text: str) -> Member:
        """A group by id (hex, or a unique prefix of at least 6 digits) or by unique name."""
        text = text.strip()
        by_name = [g for g in self.groups.values() if g.core.state.name == text]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise GroupError(f"several groups are called {text!r}; use the group id")
        lowered = text.lower()
        if len(lowered) >= 6 and all(c in "0123456789abcdef" for c in lowered):
            by_id = [g for g in self.groups.values() if g.id.hex().startswith(lowered)]
            if len(by_id) == 1:
                return by_id[0]
            if len(by_id) > 1:
                raise GroupError(f"{text!r} matches several groups; give more of the id")
        raise GroupError(f"no group {text!r} (see `kith group list`)")

    def command(self, group: Member, command: C.Command) -> Event:
        """Run a command that authors an event; ``GroupError`` with the reason if refused."""
        event = self.handle(group, command)
        if event is None:
            raise GroupError("nothing was sent")
        return event

    def author(self, group: Member, body: Body) -> Event:
        """Author ``body`` as is (membership and open-group operations)."""
        return self.command(group, C.AuthorBody(body))

    def add(self, group: Member, peer: PeerId, role: Role = Role.MEMBER,
            label: str = "") -> Event:
        return self.command(group, C.AddMember(peer, role, label))

    def remove(self, group: Member, peer: PeerId) -> Event:
        return self.command(group, C.RemoveMember(peer))

    def ban(self, group: Member, peer: PeerId, until: int = 0) -> Event:
        """Ban ``peer`` (``until``: unix seconds when an admin's node lifts it, 0 = never)."""
        return self.command(group, C.BanMember(peer, until))

    def set_role(self, group: Member, peer: PeerId, role: Role) -> Event:
        return self.command(group, C.SetMemberRole(peer, role))

    def leave(self, group: Member) -> Event:
        return self.command(group, C.LeaveGroup())

    def send(self, group: Member, text: str, *, reply_to: EventId | None = None,
             mentions: Sequence[PeerId] = ()) -> Event:
        """Post ``text`` (a reply to ``reply_to``, mentioning ``mentions``)."""
        return self.command(group, C.SendText(text, reply_to, tuple(mentions)))

    def post(self, group: Member, content: Content) -> Event:
        """Encrypt and send one MESSAGE with ``content``."""
        return self.command(group, C.PostContent(content))

    def thread(self, group: Member, target: EventId, *, readable: bool = False) -> Thread:
        """The visible, not deleted post ``target``, or a GroupError saying why not."""
        thread = group.thread(target, readable=readable)
        if isinstance(thread, str):
            raise GroupError(thread)
        return thread

    def edit(self, group: Member, target: EventId, text: str,
             mentions: Sequence[PeerId] = ()) -> Event:
        return self.command(group, C.EditText(target, text, tuple(mentions)))

    def react(self, group: Member, target: EventId, emoji: str, remove: bool = False) -> Event:
        return self.command(group, C.ReactTo(target, emoji, remove))

    def delete(self, group: Member, target: EventId) -> Event:
        return self.command(group, C.DeleteMessage(target))

    def pin(self, group: Member, target: EventId, pin: bool = True) -> Event:
        return self.command(group, C.PinMessage(target, pin))

    def mute(self, group: Member, peer: PeerId, until: int = 0, *, mute: bool = True) -> Event:
        """An admin's mute of a member (``until``: unix seconds, 0 = until unmuted)."""
        return self.command(group, C.MuteMember(peer, until, mute))

    def set_notify_muted(self, group: Member, muted: bool) -> None:
        self.store.set_notify_muted(group.id, muted)
        group.notify_muted = muted

    def unread(self, group: Member) -> int:
        """Visible posts from others after our (local) read position."""
        return group.unread()

    def mark_read(self, group: Member) -> None:
        """The user has seen everything delivered so far: remember it, announce it (coalesced)."""
        self.handle(group, C.MarkRead())

    def typing(self, group: Member, now: float | None = None) -> bool:
        """Tell the online members we are typing; False if rate-limited (not sent)."""
        if self.me not in group.core.state.members:
            raise GroupError("you are not a member of this group")
        try:
            self.handle(group, C.StartTyping(), now)
        except GroupError:
            return False
        return True

    def is_typing(self, group: Member, peer: PeerId, now: float | None = None) -> bool:
        return group.is_typing(peer, time.time() if now is None else now)

    def label(self, group: Member) -> str:
        return group.label

    # -- receiving --

    async def on_message(self, conn: PeerLink, data: bytes) -> None:
        """Handle one application message from a peer (the node's message hook)."""
        sender = conn.info.peer_id
        try:
            message = decode_message(data)
        except RemoteProtocolError as exc:
            if self.open.on_raw(conn, data):  # asking for, or refusing, an open group
                return
            log.warning("dropping message from %s: %s", short_id(sender), exc)
            return
        if self.open.on_message(sender, message):  # the history of a group we are joining
            return
        if isinstance(message, WantMessage | ChunkMessage | NoChunkMessage):
            if self.files is not None:
                await self.files.on_message(conn, message)
            return
        payload: Payload
        if isinstance(message, AckMessage):
            payload = Ack(message.ids)
        elif isinstance(message, VectorMessage):
            payload = Vector(message.vector, message.want)
        elif isinstance(message, TypingMessage):
            payload = Typing()
        else:
            events: list[Event] = []
            for raw in message.events:
                try:
                    events.append(decode_event(raw))
                except EventError as exc:
                    log.warning("dropping an event from %s: %s", short_id(sender), exc)
            group = self.groups.get(message.group)
            if group is None:
                self._maybe_adopt(sender, message.group, events, dict(message.copies))
                return
            payload = Events(tuple(events), message.copies, message.sync)
        group = self.groups.get(message.group)
        if group is not None:
            self.handle(group, Received(sender, payload))

    def deliver(self, group: Member, events: Sequence[Event], sender: PeerId) -> None:
        """Deliver events we got some other way (an open group's history) as if received."""
        self.handle(group, Received(sender, Events(tuple(events))))

    def _maybe_adopt(
        self, sender: PeerId, group_id: GroupId, events: list[Event],
        copies: dict[EventId, bytes],
    ) -> None:
        core = self._pending.get(group_id)
        if core is None:
            if len(self._pending) >= MAX_PENDING_GROUPS:
                self._pending.pop(next(iter(self._pending)))
            core = self._pending[group_id] = GroupCore(group_id, max_buffer=1024)
        for event in events:
            core.receive(event)
        if self.me not in core.state.members:
            if core.size() > MAX_PENDING_EVENTS:
                del self._pending[group_id]
                log.warning("dropping %d events from %s for group %s, which we are not in",
                            core.size(), short_id(sender), group_id.hex()[:12])
                return
            log.info("events from %s for group %s, which we are not in%s: holding %d",
                     short_id(sender), group_id.hex()[:12],
                     "" if core.state.created else " (no CREATE yet)", core.size())
            return
        del self._pending[group_id]
        self.adopt(core, sender, [*core.ordered(), *core.waiting()], copies)
        log.info("added to group %s by %s", core.state.name, short_id(sender))

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

    # -- channels --

    def peer_connected(self, peer: PeerId) -> None:
        """A channel to ``peer`` came up: push what it has not acknowledged, then sync."""
        for group in list(self.groups.values()):
            self.handle(group, PeerUp(peer))
        if self.files is not None:
            self.files.peer_connected(peer)

    def push(self, group: Member, peer: PeerId, events: list[Event]) -> None:
        """Send ``peer`` these events now (catch-up batches)."""
        group.out, group.now = [], time.time()
        group.push(peer, events)
        effects, group.out = group.out, []
        self._apply(group, effects)

    # -- watching --

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


_PERSIST = (SaveEvent, SetContent, EraseContent, SaveOwnKey, SaveOwnHistory, SavePeerKey,
            SaveCopy, SaveEquivocation, SetLeft, SetName, SaveReadMarks, SaveDelivery)


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
