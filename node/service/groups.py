"""``GroupService``: groups on a running node (trio driver over the pure group core).

It owns, per group, a ``GroupCore`` (order, validity, membership), the key
material, and the node's SQLite store, and it talks to other members through
the node's channels. Rules it keeps:

* **Store first.** An event is written to SQLite (with the key state it
  changed, in one transaction) before it is acknowledged or sent anywhere;
  our own sender-chain step is written before the ciphertext leaves, so a
  crash can never reuse a message key.
* **Client-side fanout.** The author pushes each new event straight to every
  other member, through the per-peer queues (``send_nowait``): a slow member
  never holds up the others.
* **Outbox.** Our own events stay "not delivered" to a member until it acks
  them; whenever a member's channel comes up we push what it has not acked,
  so messages written while nobody was reachable go out later, also after a
  restart. The member who added someone also pushes it the group's history.
* **Unknown groups.** Events of a group we are not in are held in a small,
  bounded side core; if they make us a member (someone added us), the group
  is adopted and stored, otherwise they are dropped with one log line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import trio

from node.crypto import sender_keys
from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import SenderKeyState
from node.errors import DecryptError, KithError, RemoteProtocolError
from node.group.bodies import (
    Add,
    Ban,
    Body,
    Create,
    Delete,
    History,
    Leave,
    Mute,
    OpenMessage,
    PairwiseMessage,
    Pin,
    PrivateMessage,
    Receipt,
    Remove,
    Role,
    SenderKey,
    SetRole,
    decode_body,
    encode_body,
    group_id_for,
    kind_of,
)
from node.group.content import (
    Content,
    Conversation,
    ConversationFold,
    Edit,
    Item,
    Post,
    React,
    Thread,
    check_emoji,
    decode_content,
    encode_content,
)
from node.group.events import Event, EventError, EventId, GroupId, Kind, decode_event
from node.group.membership import Membership
from node.group.state import (
    Deleted,
    Delivered,
    Dropped,
    Duplicate,
    Effect,
    Equivocation,
    GroupCore,
    MembershipChanged,
    Rejected,
)
from node.ids import PeerId, short_id
from node.service import keys as K
from node.service.files import FileService
from node.service.open_groups import OpenGroups
from node.service.sync import Sync
from node.store.db import EventRow, GroupRow, Store
from node.wire.messages import (
    MAX_EVENTS,
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
    from node.net.connection import PeerConnection
    from node.node import Node

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Most unknown groups whose events we hold while waiting to see if we were added,
#: and most events held per such group (an invitation is history enough to adopt).
MAX_PENDING_GROUPS = 8
MAX_PENDING_EVENTS = 1024
#: Delivery receipts (acks of our events) are saved in one transaction this often.
DELIVERY_SAVE_INTERVAL = 0.5
#: Stay well under the channel's 1 MiB message cap when batching events.
BATCH_BYTES = 512 * 1024
#: A typing notice is sent at most this often per group, and shown this long.
TYPING_INTERVAL = 3.0
TYPING_SHOWN = 5.0


@dataclass(frozen=True, slots=True)
class TypingNotice:
    """``author`` is typing in ``group`` (ephemeral: streamed to followers, never stored)."""

    group: GroupId
    author: PeerId


Notice = Event | TypingNotice


def display_text(content: Content | None) -> str | None:
    """What the ``text`` column holds for a content: the text, or a reaction's emoji."""
    if isinstance(content, Post | Edit):
        return content.text
    if isinstance(content, React):
        return content.emoji
    return None


class GroupError(KithError):
    """A group operation the user asked for cannot be done (one clear line)."""


@dataclass(slots=True)
class _Fold:
    """``Group.conversation``'s fold so far."""

    key: tuple[int, int]  # (Group.version, deletes) it was made under
    state: Membership  # the membership state it was made under (never changed in place)
    folder: ConversationFold
    done: int = 0  # how many delivered events (in delivery order) it has taken in
    last: tuple[int, bytes, int] | None = None  # order key of its last edit or reaction


@dataclass(slots=True)
class Group:
    row: GroupRow
    core: GroupCore
    keys: K.GroupKeys = field(default_factory=K.GroupKeys)
    texts: dict[EventId, str | None] = field(default_factory=dict)
    copies: dict[EventId, bytes] = field(default_factory=dict)  # pairwise: our own copy
    acked: dict[EventId, dict[PeerId, float]] = field(default_factory=dict)
    joined_at: dict[EventId, float] = field(default_factory=dict)  # received_at per event
    counters: dict[EventId, K.Counters] = field(default_factory=dict)
    watchers: list[trio.MemorySendChannel[Event]] = field(default_factory=list)
    notice_watchers: list[trio.MemorySendChannel[Notice]] = field(default_factory=list)
    invited: set[PeerId] = field(default_factory=set)  # members we added (we owe them history)
    #: The last version vector each member sent us (sync; tells what it has of ours).
    peer_vectors: dict[PeerId, dict[PeerId, int]] = field(default_factory=dict)
    #: Acks of others' events we relayed (in memory only: sync backpressure).
    relay_acks: dict[EventId, set[PeerId]] = field(default_factory=dict)
    relay_waiters: dict[EventId, int] = field(default_factory=dict)  # sessions awaiting an ack
    own_ids: set[EventId] = field(default_factory=set)
    equivocated: set[tuple[PeerId, int]] = field(default_factory=set)
    redecrypted: list[Event] = field(default_factory=list)  # history just made readable
    #: Read receipts: reader -> author -> highest seq it has read.
    read: dict[PeerId, dict[PeerId, int]] = field(default_factory=dict)
    unread_receipt: bool = False  # we read something not yet announced
    contents: dict[EventId, Content] = field(default_factory=dict)  # decrypted message content
    read_marks: dict[PeerId, int] = field(default_factory=dict)  # local: author -> seq read
    notify_muted: bool = False  # local: no notifications for this group
    typing: dict[PeerId, float] = field(default_factory=dict)  # member -> when it last typed
    typing_sent: float = 0.0
    version: int = 0  # bumped when a content changes without a new event (cache key)
    #: The conversation folded so far (``conversation``).
    _fold: _Fold | None = None

    def conversation(self) -> Conversation:
        """Posts with their edits, reactions and tombstones.

        Folded incrementally. Posts do not depend on each other's order, so new posts
        join the fold wherever the total order puts them; edits and reactions do, so a
        new one joins only if it comes after every edit and reaction folded so far.
        Anything else (an edit or reaction ordered before one already folded, a delete,
        a content change, a membership change, which may withdraw or mute earlier
        messages) starts a new fold.
        """
        core = self.core
        key = (self.version, len(core.deleted))
        fold = self._fold
        if fold is not None and fold.key == key and fold.state is core.state:
            new = sorted(core.delivered_since(fold.done), key=lambda e: e.order_key)
            first = next((e for e in new if self._order_sensitive(e)), None)
            if first is None or fold.last is None or first.order_key > fold.last:
                self._feed(fold, new)
                return fold.folder.conversation()
        deleted = {t: d.author for t, d in core.deleted.items()}
        fold = _Fold(key, core.state, ConversationFold(core.saw, deleted))
        self._fold = fold
        self._feed(fold, core.ordered_view())
        return fold.folder.conversation()

    def _order_sensitive(self, event: Event) -> bool:
        return event.kind is Kind.MESSAGE and isinstance(self.contents.get(event.id),
                                                         Edit | React)

    def _feed(self, fold: _Fold, events: Sequence[Event]) -> None:
        core = self.core
        for e in events:
            if (e.kind is Kind.MESSAGE and not core.is_withdrawn(e.author, e.seq)
                    and not core.is_muted(e)):
                fold.folder.add(Item(e.id, e.author, self.contents.get(e.id)))
                if self._order_sensitive(e):
                    fold.last = max(fold.last or e.order_key, e.order_key)
        fold.done = core.delivered_count()

    def set_new_content(self, event_id: EventId, content: Content) -> None:
        """The content of an event just delivered. Usually the fold has not taken the
        event in yet (no new fold needed); if it has (it was folded as unreadable
        while its batch was being stored), the next ``conversation()`` folds anew."""
        self.contents[event_id] = content
        if self._fold is not None and self._fold.folder.has(event_id):
            self.version += 1

    def has(self, peer: PeerId, event: Event) -> bool:
        """Does ``peer`` have ``event`` (acked it, or its vector says so)?"""
        if peer in self.acked.get(event.id, {}) or peer in self.relay_acks.get(event.id, ()):
            return True
        return self.peer_vectors.get(peer, {}).get(event.author, 0) >= event.seq

    @property
    def id(self) -> GroupId:
        return self.row.id


class GroupService:
    def __init__(self, node: Node, store: Store) -> None:
        self.node = node
        self.store = store
        self.identity: IdentityKey = node.identity
        self.me = node.peer_id
        self.groups: dict[GroupId, Group] = {}
        self._pending: dict[GroupId, GroupCore] = {}
        self._unsaved_deliveries: list[tuple[GroupId, EventId, PeerId, float]] = []
        self._changed = trio.Event()
        self.sync = Sync(self, node.config.sync_interval)
        self.files: FileService | None = None  # attachments (node.service.files), after _load
        self.open: OpenGroups = OpenGroups(self)  # open groups: announcing, joining, bans
        self._load()
        self.files = FileService(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work: anti-entropy with connected members; coalesced read receipts."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receipts)
            nursery.start_soon(self._save_deliveries)
            await nursery.start(self.sync.run)
            if self.files is not None:
                await nursery.start(self.files.run)
            task_status.started()

    # -- start-up --

    def _load(self) -> None:
        for row in self.store.groups():
            group = Group(row, GroupCore(row.id))
            own = self.store.own_key(row.id)
            if own is not None:
                group.keys.own = K.OwnKey(*own)
            group.keys.peers = self.store.peer_keys(row.id)
            group.acked = self.store.deliveries(row.id)
            for ev in self.store.events(row.id):
                event = decode_event(ev.raw)
                for effect in group.core.receive(event):
                    if isinstance(effect, Delivered):
                        self._note_invite(group, effect)
                if event.author == self.me:
                    group.own_ids.add(event.id)
                group.texts[event.id] = ev.text
                group.joined_at[event.id] = ev.received_at
                if ev.content is not None:
                    try:
                        group.contents[event.id] = decode_content(ev.content)
                    except EventError as exc:
                        log.warning("stored content of %s is unreadable: %s",
                                    event.id.hex()[:12], exc)
            for event_id, blob in self._own_copies(group):
                group.copies[event_id] = blob
            with self.store.transaction():  # a delete is final, also after a crash
                for target in group.core.deleted:
                    if group.texts.get(target) is not None or target in group.contents:
                        self._erase(group, target)
            group.notify_muted = self.store.notify_muted(row.id)
            group.read_marks = self.store.read_marks(row.id)
            self.groups[row.id] = group
        if self.groups:
            log.info("loaded %d group(s) from %s", len(self.groups), self.store.path)

    def _own_copies(self, group: Group) -> list[tuple[EventId, bytes]]:
        if group.core.mode != "pairwise":
            return []
        out = []
        for event in group.core.ordered():
            if event.kind is Kind.MESSAGE and event.author != self.me:
                blob = self.store.copy(event.id, self.me)
                if blob is not None:
                    out.append((event.id, blob))
        return out

    # -- user operations --

    def create(
        self, name: str, mode: str = "private", max_members: int = 500,
        share_history: bool = False, policy: str = "",
    ) -> Group:
        nonce = os.urandom(16)
        group_id = group_id_for(self.me, nonce)
        row = GroupRow(group_id, name, mode, time.time())
        group = Group(row, GroupCore(group_id))
        with self.store.transaction():
            self.store.add_group(row)
            self.groups[group_id] = group
            self._author(group, Create(name, mode, nonce, max_members,
                                       share_history=share_history, policy=policy))
        log.info("created %s group %s (%s)", mode, name, group_id.hex()[:12])
        return group

    def find(self, text: str) -> Group:
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

    def add(self, group: Group, peer: PeerId, role: Role = Role.MEMBER, label: str = "") -> Event:
        event = self._author_checked(group, Add(peer, role, label))
        self._invite(group, peer)
        return event

    def remove(self, group: Group, peer: PeerId) -> Event:
        return self._author_checked(group, Remove(peer))

    def ban(self, group: Group, peer: PeerId, until: int = 0) -> Event:
        """Ban ``peer`` (``until``: unix seconds when an admin's node lifts it, 0 = never)."""
        return self._author_checked(group, Ban(peer, until))

    def set_role(self, group: Group, peer: PeerId, role: Role) -> Event:
        return self._author_checked(group, SetRole(peer, role))

    def leave(self, group: Group) -> Event:
        event = self._author_checked(group, Leave())
        with self.store.transaction():
            self.store.set_group_left(group.id, True)
        return event

    def send(self, group: Group, text: str, *, reply_to: EventId | None = None,
             mentions: Sequence[PeerId] = ()) -> Event:
        """Post ``text`` (a reply to ``reply_to``, mentioning ``mentions``)."""
        if reply_to is not None:
            self.thread(group, reply_to)  # must be a message we can see
        return self.post(group, Post(text, reply_to, tuple(sorted(set(mentions)))))

    def thread(self, group: Group, target: EventId, *, readable: bool = False) -> Thread:
        """The visible, not deleted post ``target``, or a GroupError saying why not."""
        thread = group.conversation().threads.get(target)
        if thread is None:
            raise GroupError(f"no message {target.hex()[:12]} in this group")
        if thread.deleted_by is not None:
            raise GroupError(f"message {target.hex()[:12]} was deleted")
        if readable and thread.text is None:
            raise GroupError(f"message {target.hex()[:12]} cannot be read here")
        return thread

    def edit(self, group: Group, target: EventId, text: str,
             mentions: Sequence[PeerId] = ()) -> Event:
        thread = self.thread(group, target, readable=True)
        if thread.author != self.me:
            raise GroupError("only the author may edit a message")
        return self.post(group, Edit(target, text, tuple(sorted(set(mentions)))))

    def react(self, group: Group, target: EventId, emoji: str, remove: bool = False) -> Event:
        self.thread(group, target)
        try:
            check_emoji(emoji)
        except EventError as exc:
            raise GroupError(str(exc)) from None
        return self.post(group, React(target, emoji, remove))

    def delete(self, group: Group, target: EventId) -> Event:
        self.thread(group, target)
        return self._author_checked(group, Delete(target))

    def pin(self, group: Group, target: EventId, pin: bool = True) -> Event:
        self.thread(group, target)
        return self._author_checked(group, Pin(target, pin))

    def mute(self, group: Group, peer: PeerId, until: int = 0, *, mute: bool = True) -> Event:
        """An admin's mute of a member (``until``: unix seconds, 0 = until unmuted)."""
        return self._author_checked(group, Mute(peer, mute, until))

    def set_notify_muted(self, group: Group, muted: bool) -> None:
        self.store.set_notify_muted(group.id, muted)
        group.notify_muted = muted

    def post(self, group: Group, content: Content) -> Event:
        """Encrypt and send one MESSAGE with ``content``."""
        state = group.core.state
        role = state.role(self.me)
        if role is None:
            raise GroupError("you are not a member of this group")
        if role is Role.GUEST:
            raise GroupError("guests can read but not post")
        if self.me in state.muted():
            raise GroupError("an admin has muted you in this group")
        counters = K.Counters()
        if group.core.mode == "open":  # no end-to-end encryption: signed content in clear
            counters.signatures += 1
            return self._author(group, OpenMessage(encode_content(content)), content=content,
                                counters=counters)
        if group.core.mode == "pairwise":
            return self._send_pairwise(group, content, counters)
        members = set(state.members)
        if K.needs_rotation(group.keys, members):
            fresh, distribution = K.new_sender_key(group.keys, self.me, members)
            with self.store.transaction():
                if group.core.state.share_history:  # kept to hand to later members
                    self.store.save_own_history(group.id, fresh.epoch, fresh.key)
                self._author(group, distribution, new_own=fresh)
            log.info("group %s: new sender key, epoch %d, for %d member(s)",
                     self._label(group), fresh.epoch, len(fresh.recipients))
        assert group.keys.own is not None
        own, message = K.encrypt_private(group.keys.own, group.id, self.me, content, counters)
        counters.signatures += 1
        return self._author(group, message, new_own=own, content=content, counters=counters)

    def unread(self, group: Group) -> int:
        """Visible posts from others after our (local) read position."""
        conv = group.conversation()
        core = group.core
        count = 0
        for thread in conv.threads.values():
            event = core.get(thread.id)
            if (event is not None and thread.author != self.me and thread.deleted_by is None
                    and event.seq > group.read_marks.get(thread.author, 0)):
                count += 1
        return count

    def mark_read(self, group: Group) -> None:
        """The user has seen everything delivered so far: remember it, announce it (coalesced)."""
        latest = {a: n for a, n in group.core.last_message.items() if a != self.me}
        moved = {a: n for a, n in latest.items() if n > group.read_marks.get(a, 0)}
        if moved:
            self.store.set_read_marks(group.id, moved)
            group.read_marks.update(moved)
        if self.me not in group.core.state.members or not self.node.config.read_receipts:
            return
        if self._read_delta(group):
            group.unread_receipt = True

    def _read_delta(self, group: Group) -> tuple[tuple[PeerId, int], ...]:
        mine = group.read.get(self.me, {})
        latest = {a: n for a, n in group.core.last_message.items() if a != self.me}
        return tuple(sorted((a, n) for a, n in latest.items() if n > mine.get(a, 0)))

    def _flush_receipts(self) -> None:
        for group in self.groups.values():
            if not group.unread_receipt:
                continue
            group.unread_receipt = False
            delta = self._read_delta(group)
            if delta and self.me in group.core.state.members:
                self._author(group, Receipt(delta))

    async def _receipts(self) -> None:
        """Send read receipts at most every ``receipt_interval``: one small event per burst.

        The same beat ends timed mutes whose end our clock has passed (as an admin).
        """
        while True:
            await trio.sleep(self.node.config.receipt_interval)
            self._flush_receipts()
            self.expire_mutes(time.time())
            self.open.expire_bans(time.time())

    def expire_mutes(self, now: float) -> list[Event]:
        """As owner or admin, UNMUTE the members whose timed mute ended by our clock."""
        unmuted = []
        for group in self.groups.values():
            state = group.core.state
            mine = state.role(self.me)
            if mine is None or mine < Role.ADMIN:
                continue
            for peer, until in state.muted().items():
                theirs = state.role(peer)
                if 0 < until <= now and (theirs is None or theirs < mine):
                    try:
                        unmuted.append(self._author(group, Mute(peer, False, 0)))
                    except _NotAccepted as exc:
                        log.info("group %s: cannot end the mute of %s: %s",
                                 self._label(group), short_id(peer), exc.reason)
        return unmuted

    # -- typing (ephemeral) --

    def typing(self, group: Group, now: float | None = None) -> bool:
        """Tell the online members we are typing; False if rate-limited (not sent)."""
        now = time.time() if now is None else now
        if self.me not in group.core.state.members:
            raise GroupError("you are not a member of this group")
        if now - group.typing_sent < TYPING_INTERVAL:
            return False
        group.typing_sent = now
        data = encode_message(TypingMessage(group.id))
        for member in group.core.state.members:
            conn = self.node.connections.get(member) if member != self.me else None
            if conn is not None:
                conn.send_nowait(data)
        return True

    def _on_typing(self, sender: PeerId, message: TypingMessage) -> None:
        group = self.groups.get(message.group)
        if group is None or sender not in group.core.state.members:
            return  # only members' notices count; never stored
        if group.core.state.role(sender) is Role.GUEST or sender in group.core.state.muted():
            return
        group.typing[sender] = time.time()
        self._notify(group, [TypingNotice(group.id, sender)])

    def is_typing(self, group: Group, peer: PeerId, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - group.typing.get(peer, -TYPING_SHOWN) < TYPING_SHOWN

    def _send_pairwise(self, group: Group, content: Content, counters: K.Counters) -> Event:
        seq = group.core.frontier.get(self.me, 0) + 1
        recipients = [m for m in group.core.state.members if m != self.me]
        body, copies = K.encrypt_pairwise(self.identity, recipients, group.id, seq, content,
                                          counters)
        counters.signatures += 1
        return self._author(group, body, content=content, copies=copies, counters=counters)

    def _author_checked(self, group: Group, body: Body) -> Event:
        try:
            return self._author(group, body)
        except _NotAccepted as exc:
            raise GroupError(exc.reason) from None

    # -- authoring --

    def _author(
        self,
        group: Group,
        body: Body,
        *,
        new_own: K.OwnKey | None = None,
        content: Content | None = None,
        copies: dict[PeerId, bytes] | None = None,
        counters: K.Counters | None = None,
    ) -> Event:
        """Sign, deliver locally, store (with key state), then push to the members."""
        epoch = new_own.epoch if new_own is not None else self._epoch(group)
        audience = set(group.core.state.members)  # before: a removed member hears of it
        unsigned = group.core.next_event(self.me, epoch, kind_of(body), encode_body(body))
        if isinstance(body, PrivateMessage):
            assert new_own is not None
            signature = new_own.key.sign(unsigned.signing_bytes())
        else:
            signature = self.identity.sign(unsigned.signing_bytes())
        event = unsigned.signed(signature)
        effects = group.core.receive(event)
        rejected = [e for e in effects if isinstance(e, Rejected)]
        if rejected:
            raise _NotAccepted(rejected[0].reason)
        now = time.time()
        text = display_text(content)
        packed = encode_content(content) if content is not None else None
        with self.store.transaction():
            self.store.add_event(EventRow(group.id, event.id, self.me, event.seq, event.lamport,
                                          int(event.kind), event.raw, now, text, packed))
            if new_own is not None:
                self.store.save_own_key(group.id, new_own.epoch, new_own.key, new_own.recipients)
            for member, blob in (copies or {}).items():
                self.store.add_copy(group.id, event.id, member, blob)
            if content is not None:
                group.set_new_content(event.id, content)
            group.texts[event.id] = text
            erased = self._apply_deletes(group, effects)
        if erased:
            self.store.checkpoint()
        if new_own is not None:
            group.keys.own = new_own
        group.own_ids.add(event.id)
        group.joined_at[event.id] = now
        if counters is not None:
            group.counters[event.id] = counters
        sent = self._fanout(group, [event], copies or {}, audience)
        if counters is not None:
            counters.bytes_out += sent
        self._after_delivery(group, effects)  # may author more (keys for newcomers): after
        return event

    def _epoch(self, group: Group) -> int:
        return group.keys.own.epoch if group.keys.own is not None else 0

    def _fanout(
        self, group: Group, events: list[Event], copies: dict[PeerId, bytes],
        audience: set[PeerId] | None = None,
    ) -> int:
        """Queue ``events`` for every other member that is online; return bytes queued.

        ``audience`` adds who was a member before these events (so that a member
        being removed is told).
        """
        total = 0
        raws = tuple(e.raw for e in events)
        shared = encode_message(EventsMessage(group.id, raws))  # the same bytes for everyone
        for member in set(group.core.state.members) | (audience or set()):
            if member == self.me:
                continue
            data = shared
            if member in copies:
                cps = tuple((e.id, copies[member]) for e in events if e.kind is Kind.MESSAGE)
                data = encode_message(EventsMessage(group.id, raws, cps))
            conn = self.node.connections.get(member)
            if conn is not None and conn.send_nowait(data):
                total += len(data)
        return total

    # -- membership side effects --

    def _note_invite(self, group: Group, delivered: Delivered) -> None:
        """Bookkeeping every delivered event needs, live or replayed from the store."""
        body, author = delivered.body, delivered.event.author
        if isinstance(body, Add) and author == self.me:
            group.invited.add(body.member)
        elif isinstance(body, Receipt):
            positions = group.read.setdefault(author, {})
            for who, seq in body.read:
                positions[who] = max(positions.get(who, 0), seq)

    def _after_delivery(self, group: Group, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Delivered):
                self._note_invite(group, effect)
            if isinstance(effect, MembershipChanged):
                self._membership_changed(group, effect)
            elif isinstance(effect, Delivered) and effect.event.kind is Kind.RENAME:
                self.store.set_group_name(group.id, group.core.state.name)
        self._notify(group, [e.event for e in effects if isinstance(e, Delivered)])

    def _membership_changed(self, group: Group, change: MembershipChanged) -> None:
        added = set(change.after.members) - set(change.before.members)
        removed = set(change.before.members) - set(change.after.members)
        for peer in removed:
            log.info("group %s: %s left or was removed", self._label(group), short_id(peer))
        if self.me in removed:
            self.store.set_group_left(group.id, True)
        own = group.keys.own
        newcomers = frozenset(p for p in added if p != self.me)
        for peer in newcomers:
            # Our events from before we saw it join are in its causal past: it needs them.
            self._flush(group, peer)
        if newcomers and group.core.mode == "open":
            self.sync.nudge(group)  # a JOIN reaches only who the joiner knew: spread it
        if own is not None and newcomers and self.me in change.after.members:
            # hand our current chain to the newcomers: they read from now on
            body = K.distribution(own.key, own.epoch, newcomers)
            updated = K.OwnKey(own.epoch, own.key, own.recipients | newcomers)
            self._author(group, body, new_own=updated)
            if change.after.share_history:  # ... and, by the group's choice, from before
                epochs = self.store.own_history(group.id)
                for peer in sorted(newcomers):
                    history = K.history_for(peer, epochs)
                    if history is not None:
                        self._author(group, history)

    # -- receiving --

    async def on_message(self, conn: PeerConnection, data: bytes) -> None:
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
        if isinstance(message, AckMessage):
            self._on_ack(sender, message)
            return
        if isinstance(message, VectorMessage):
            self.sync.on_vector(sender, message)
            return
        if isinstance(message, TypingMessage):
            self._on_typing(sender, message)
            return
        stored = self._on_events(sender, message)
        if stored:
            ack = AckMessage(message.group, tuple(stored[:MAX_EVENTS]))
            conn.send_nowait(encode_message(ack))

    def _on_ack(self, sender: PeerId, message: AckMessage) -> None:
        group = self.groups.get(message.group)
        if group is None:
            return
        now = time.time()
        for event_id in message.ids:
            if event_id in group.own_ids:
                if sender not in group.acked.setdefault(event_id, {}):
                    group.acked[event_id][sender] = now
                    self._unsaved_deliveries.append((group.id, event_id, sender, now))
            elif event_id in group.relay_waiters:  # a sync batch we are waiting on
                group.relay_acks.setdefault(event_id, set()).add(sender)
        self._notify(group, [])

    def save_deliveries(self) -> None:
        """Write the delivery receipts gathered since last time, in one transaction.

        Receipts are written lazily (not one fsync per ack): losing the last second
        of them in a crash only means the member is sent those events again.
        """
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

    def _on_events(self, sender: PeerId, message: EventsMessage) -> list[EventId]:
        events: list[Event] = []
        for raw in message.events:
            try:
                events.append(decode_event(raw))
            except EventError as exc:
                log.warning("dropping an event from %s: %s", short_id(sender), exc)
        copies = dict(message.copies)
        group = self.groups.get(message.group)
        if group is None:
            group = self._maybe_adopt(sender, message.group, events, copies)
            if group is None:
                return []
            return [e.id for e in group.core.ordered() if e.id in {x.id for x in events}]
        return self._receive(group, events, copies, sender, relayed=message.sync)

    def _receive(
        self, group: Group, events: list[Event], copies: dict[EventId, bytes], sender: PeerId,
        *, relayed: bool = False,
    ) -> list[EventId]:
        """Deliver, store and react to events; ``relayed``: a sync batch (tell the others).

        Everything the batch delivers is written in one transaction (one fsync per
        incoming message, not per event); only after the commit do we react (which
        may author and send events of our own) and ack.
        """
        stored: list[EventId] = []
        dropped: dict[str, int] = {}
        reactions: list[Effect] = []
        late: list[Event] = []
        erased = False
        with self.store.transaction():
            for event in events:
                if event.kind is Kind.MESSAGE and event.id in copies:
                    group.copies[event.id] = copies[event.id]
                for effect in group.core.receive(event):
                    if isinstance(effect, Delivered):
                        self._store_delivered(group, effect)
                        stored.append(effect.event.id)
                        reactions.append(effect)
                    elif isinstance(effect, MembershipChanged):
                        reactions.append(effect)
                    elif isinstance(effect, Duplicate):
                        if not group.core.is_waiting(effect.event):  # ack only what is stored
                            stored.append(effect.event.id)
                            late.append(effect.event)
                    elif isinstance(effect, Rejected):
                        log.warning("group %s: rejected event %s from %s: %s",
                                    self._label(group), effect.event.id.hex()[:12],
                                    short_id(effect.event.author), effect.reason)
                    elif isinstance(effect, Equivocation):
                        self._equivocation(group, effect)
                    elif isinstance(effect, Dropped):
                        dropped[effect.reason] = dropped.get(effect.reason, 0) + 1
                    elif isinstance(effect, Deleted):
                        erased = self._apply_deletes(group, [effect]) or erased
        if erased:
            self.store.checkpoint()
        if reactions:
            self._after_delivery(group, reactions)
            if relayed:
                self.sync.nudge(group)
        if group.redecrypted:
            readable, group.redecrypted = group.redecrypted, []
            self._notify(group, readable)
        for event in late:
            self._late_copy(group, event)
        for reason, count in dropped.items():  # one line per message, not per event
            log.info("group %s: dropped %d event(s) from %s: %s", self._label(group), count,
                     short_id(sender), reason)
        return stored

    def _store_delivered(self, group: Group, delivered: Delivered) -> None:
        event, body = delivered.event, delivered.body
        content: Content | None = None
        key_update: tuple[PeerId, int, SenderKeyState] | None = None
        try:
            if isinstance(body, SenderKey):
                state = K.open_distribution(self.identity, body)
                known = group.keys.peers.get((event.author, body.epoch))
                if state is not None and (known is None or known.index < state.index):
                    key_update = (event.author, body.epoch, state)
            elif isinstance(body, PrivateMessage):
                state = group.keys.peers.get((event.author, event.epoch))
                if state is not None:
                    new_state, content = K.decrypt_private(state, group.id, event.author,
                                                           event.epoch, body)
                    key_update = (event.author, event.epoch, new_state)
            elif isinstance(body, History) and body.member == self.me:
                self._read_history(group, event.author, body)
            elif isinstance(body, OpenMessage):
                content = K.read_open(body)
            elif isinstance(body, PairwiseMessage):
                blob = group.copies.get(event.id)
                if blob is not None:
                    content = K.decrypt_pairwise(self.identity, group.id, event.author,
                                                 event.seq, body, blob)
        except DecryptError as exc:
            log.warning("group %s: cannot decrypt %s from %s: %s", self._label(group),
                        event.id.hex()[:12], short_id(event.author), exc)
        if content is not None and self._erased_edit(group, event, content):
            content = None  # an edit of a message deleted before it arrived: not kept
        text = display_text(content)
        now = time.time()
        with self.store.transaction():
            self.store.add_event(EventRow(
                group.id, event.id, event.author, event.seq, event.lamport, int(event.kind),
                event.raw, now, text, encode_content(content) if content is not None else None))
            if key_update is not None:
                self.store.save_peer_key(group.id, *key_update)
            if event.id in group.copies:
                self.store.add_copy(group.id, event.id, self.me, group.copies[event.id])
        if key_update is not None:
            group.keys.peers[(key_update[0], key_update[1])] = key_update[2]
        group.texts[event.id] = text
        if content is not None:
            group.set_new_content(event.id, content)
            self._check_content(group, event, content)
        group.joined_at[event.id] = now

    def _check_content(self, group: Group, event: Event, content: Content) -> None:
        """Log (once, on arrival) an edit or reaction the conversation will ignore."""
        if isinstance(content, Post):
            return
        reason = group.conversation().ignored.get(event.id)
        if reason is not None:
            log.warning("group %s: ignoring %s %s from %s: %s", self._label(group),
                        "edit" if isinstance(content, Edit) else "reaction",
                        event.id.hex()[:12], short_id(event.author), reason)

    def _erased_edit(self, group: Group, event: Event, content: Content) -> bool:
        if not isinstance(content, Edit) or content.target not in group.core.deleted:
            return False
        target = group.core.get(content.target)
        return target is not None and target.author == event.author

    def _apply_deletes(self, group: Group, effects: Sequence[Effect]) -> bool:
        """Erase the content of messages deleted by these effects (inside a transaction)."""
        erased = False
        for effect in effects:
            if isinstance(effect, Deleted):
                self._erase(group, effect.target)
                erased = True
        return erased

    def _erase(self, group: Group, target: EventId) -> None:
        """Forget a deleted message: its text, content, copies, and its author's edits of it."""
        message = group.core.get(target)
        doomed = [target] + [
            eid for eid, c in group.contents.items()
            if isinstance(c, Edit) and c.target == target and message is not None
            and (e := group.core.get(eid)) is not None and e.author == message.author
        ]
        if self.files is not None:
            self.files.forget(group, target)  # a deleted message's file goes too
        for eid in doomed:
            self.store.erase_content(eid)
            group.texts[eid] = None
            group.contents.pop(eid, None)
            group.copies.pop(eid, None)
        group.version += 1

    def _read_history(self, group: Group, author: PeerId, body: History) -> None:
        """Decrypt ``author``'s earlier messages we stored unreadable (shared history)."""
        for epoch, signing_public, sealed in body.keys:
            try:
                state = sender_keys.open_sealed(self.identity, sealed, signing_public)
            except DecryptError as exc:
                log.warning("group %s: unusable history key from %s: %s", self._label(group),
                            short_id(author), exc)
                continue
            unread = []
            for event in group.core.ordered():
                if (event.author == author and event.epoch == epoch
                        and event.kind is Kind.MESSAGE and group.texts.get(event.id) is None
                        and event.id not in group.core.deleted):
                    message = decode_body(Kind.MESSAGE, event.body, mode=group.core.mode)
                    if isinstance(message, PrivateMessage):
                        unread.append((message.index, event, message))
            for _, event, message in sorted(unread, key=lambda x: x[0]):
                try:
                    state, content = K.decrypt_private(state, group.id, author, epoch, message)
                except DecryptError as exc:
                    log.info("group %s: history message %s stays unreadable: %s",
                             self._label(group), event.id.hex()[:12], exc)
                    continue
                if self._erased_edit(group, event, content):
                    continue
                text = display_text(content)
                self.store.set_content(event.id, text, encode_content(content))
                group.texts[event.id] = text
                group.contents[event.id] = content
                group.version += 1
                group.redecrypted.append(event)

    def _late_copy(self, group: Group, event: Event) -> None:
        """A pairwise copy for a message we stored unreadable (relayed without it)."""
        blob = group.copies.get(event.id)
        if (blob is None or group.texts.get(event.id) is not None
                or event.kind is not Kind.MESSAGE or event.id in group.core.deleted):
            return
        body = decode_body(Kind.MESSAGE, event.body, mode=group.core.mode)
        if not isinstance(body, PairwiseMessage):
            return
        try:
            content = K.decrypt_pairwise(self.identity, group.id, event.author, event.seq, body,
                                         blob)
        except DecryptError as exc:
            log.warning("group %s: cannot decrypt %s from %s: %s", self._label(group),
                        event.id.hex()[:12], short_id(event.author), exc)
            return
        if self._erased_edit(group, event, content):
            return
        text = display_text(content)
        with self.store.transaction():
            self.store.add_copy(group.id, event.id, self.me, blob)
            self.store.set_content(event.id, text, encode_content(content))
        group.texts[event.id] = text
        group.contents[event.id] = content
        group.version += 1
        self._notify(group, [event])

    def _equivocation(self, group: Group, eq: Equivocation) -> None:
        if (eq.author, eq.seq) in group.equivocated:
            return  # recorded and reported once: a liar cannot grow the table
        group.equivocated.add((eq.author, eq.seq))
        log.warning("group %s: %s signed two different events with seq %d (equivocation); "
                    "keeping the first", self._label(group), short_id(eq.author), eq.seq)
        self.store.add_equivocation(group.id, eq.author, eq.seq, eq.first, eq.second.raw,
                                    time.time())

    def _maybe_adopt(
        self, sender: PeerId, group_id: GroupId, events: list[Event], copies: dict[EventId, bytes]
    ) -> Group | None:
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
                return None
            log.info("events from %s for group %s, which we are not in%s: holding %d",
                     short_id(sender), group_id.hex()[:12],
                     "" if core.state.created else " (no CREATE yet)", core.size())
            return None
        del self._pending[group_id]
        row = GroupRow(group_id, core.state.name, core.state.mode, time.time())
        group = Group(row, GroupCore(group_id))
        waiting = core.waiting()
        with self.store.transaction():
            self.store.add_group(row)
            self.groups[group_id] = group
            self._receive(group, [*core.ordered(), *waiting], copies, sender)
        log.info("added to group %s by %s", core.state.name, short_id(sender))
        return group

    # -- outbox --

    def peer_connected(self, peer: PeerId) -> None:
        """A channel to ``peer`` came up: push what it has not acknowledged, then sync."""
        for group in self.groups.values():
            self._flush(group, peer)
        self.sync.announce(peer)
        if self.files is not None:
            self.files.peer_connected(peer)

    def _flush(self, group: Group, peer: PeerId) -> None:
        """Push ``peer`` our own events it has not acked (and the history, if we added it)."""
        if peer not in group.core.state.members or self.me not in group.core.state.members:
            return
        invited = self._invited(group, peer)
        pending = [e for e in group.core.ordered()
                   if not group.has(peer, e) and (e.author == self.me or invited)]
        if pending:
            self._push(group, peer, pending)

    def _invited(self, group: Group, peer: PeerId) -> bool:
        """Did we add ``peer``? Then we owe it the history it has not acknowledged."""
        return peer in group.invited

    def _invite(self, group: Group, peer: PeerId) -> None:
        if peer in self.node.connections:
            self._push(group, peer, group.core.ordered())

    def _push(self, group: Group, peer: PeerId, events: list[Event]) -> None:
        conn = self.node.connections.get(peer)
        if conn is None:
            return
        batch: list[Event] = []
        size = 0
        for event in events:
            if batch and (size + len(event.raw) > BATCH_BYTES or len(batch) >= MAX_EVENTS):
                self._send_batch(group, conn, batch)
                batch, size = [], 0
            batch.append(event)
            size += len(event.raw)
        if batch:
            self._send_batch(group, conn, batch)

    def _send_batch(self, group: Group, conn: PeerConnection, batch: list[Event]) -> None:
        peer = conn.info.peer_id
        copies = []
        for event in batch:
            mine = event.author == self.me
            if event.kind is Kind.MESSAGE and mine and group.core.mode == "pairwise":
                blob = self.store.copy(event.id, peer)
                if blob is not None:
                    copies.append((event.id, blob))
        # Outbox and invitation pushes are catch-up, not live: the receiver passes
        # the news on to its other neighbours (see Sync.nudge).
        conn.send_nowait(encode_message(EventsMessage(group.id, tuple(e.raw for e in batch),
                                                      tuple(copies), sync=True)))

    # -- watching --

    def _notify(self, group: Group, events: Sequence[Notice]) -> None:
        plain = [e for e in events if isinstance(e, Event)]
        if plain and self.files is not None:
            self.files.notice(group, plain)  # files in newly readable messages
        _send_all(group.watchers, plain)
        _send_all(group.notice_watchers, events)
        self._changed.set()
        self._changed = trio.Event()

    def watch(self, group: Group) -> trio.MemoryReceiveChannel[Event]:
        """New events of ``group`` as they are delivered."""
        send, receive = trio.open_memory_channel[Event](1024)
        group.watchers.append(send)
        return receive

    def watch_notices(self, group: Group) -> trio.MemoryReceiveChannel[Notice]:
        """New events of ``group`` and typing notices, as they happen."""
        send, receive = trio.open_memory_channel[Notice](1024)
        group.notice_watchers.append(send)
        return receive

    def _notify_all(self) -> None:
        """Wake whoever waits in ``wait_until`` (something outside any group changed)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _label(self, group: Group) -> str:
        return group.core.state.name or group.id.hex()[:12]


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


class _NotAccepted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

