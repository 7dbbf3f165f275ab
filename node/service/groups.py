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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    History,
    Leave,
    PairwiseMessage,
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
from node.group.events import Event, EventError, EventId, GroupId, Kind, decode_event
from node.group.state import (
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
from node.service.sync import Sync
from node.store.db import EventRow, GroupRow, Store
from node.wire.messages import (
    MAX_EVENTS,
    AckMessage,
    EventsMessage,
    VectorMessage,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    from node.net.connection import PeerConnection
    from node.node import Node

log = logging.getLogger(__name__)

#: Most unknown groups whose events we hold while waiting to see if we were added,
#: and most events held per such group (an invitation is history enough to adopt).
MAX_PENDING_GROUPS = 8
MAX_PENDING_EVENTS = 1024
#: Delivery receipts (acks of our events) are saved in one transaction this often.
DELIVERY_SAVE_INTERVAL = 0.5
#: Stay well under the channel's 1 MiB message cap when batching events.
BATCH_BYTES = 512 * 1024


class GroupError(KithError):
    """A group operation the user asked for cannot be done (one clear line)."""


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
        self._load()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work: anti-entropy with connected members; coalesced read receipts."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receipts)
            nursery.start_soon(self._save_deliveries)
            await nursery.start(self.sync.run)
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
            for event_id, blob in self._own_copies(group):
                group.copies[event_id] = blob
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
        share_history: bool = False,
    ) -> Group:
        nonce = os.urandom(16)
        group_id = group_id_for(self.me, nonce)
        row = GroupRow(group_id, name, mode, time.time())
        group = Group(row, GroupCore(group_id))
        with self.store.transaction():
            self.store.add_group(row)
            self.groups[group_id] = group
            self._author(group, Create(name, mode, nonce, max_members,
                                       share_history=share_history))
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

    def ban(self, group: Group, peer: PeerId) -> Event:
        return self._author_checked(group, Ban(peer))

    def set_role(self, group: Group, peer: PeerId, role: Role) -> Event:
        return self._author_checked(group, SetRole(peer, role))

    def leave(self, group: Group) -> Event:
        event = self._author_checked(group, Leave())
        with self.store.transaction():
            self.store.set_group_left(group.id, True)
        return event

    def send(self, group: Group, text: str) -> Event:
        state = group.core.state
        role = state.role(self.me)
        if role is None:
            raise GroupError("you are not a member of this group")
        if role is Role.GUEST:
            raise GroupError("guests can read but not post")
        counters = K.Counters()
        if group.core.mode == "pairwise":
            return self._send_pairwise(group, text, counters)
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
        own, message = K.encrypt_private(group.keys.own, group.id, self.me, text, counters)
        counters.signatures += 1
        return self._author(group, message, new_own=own, text=text, counters=counters)

    def mark_read(self, group: Group) -> None:
        """The user has seen everything delivered so far: announce it (soon, coalesced)."""
        if self.me not in group.core.state.members or not self.node.config.read_receipts:
            return
        if self._read_delta(group):
            group.unread_receipt = True

    def _read_delta(self, group: Group) -> tuple[tuple[PeerId, int], ...]:
        mine = group.read.get(self.me, {})
        latest: dict[PeerId, int] = {}
        for event in group.core.ordered():
            if event.kind is Kind.MESSAGE and event.author != self.me:
                latest[event.author] = max(latest.get(event.author, 0), event.seq)
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
        """Send read receipts at most every ``receipt_interval``: one small event per burst."""
        while True:
            await trio.sleep(self.node.config.receipt_interval)
            self._flush_receipts()

    def _send_pairwise(self, group: Group, text: str, counters: K.Counters) -> Event:
        seq = group.core.frontier.get(self.me, 0) + 1
        recipients = [m for m in group.core.state.members if m != self.me]
        body, copies = K.encrypt_pairwise(self.identity, recipients, group.id, seq, text, counters)
        counters.signatures += 1
        return self._author(group, body, text=text, copies=copies, counters=counters)

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
        text: str | None = None,
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
        with self.store.transaction():
            self.store.add_event(EventRow(group.id, event.id, self.me, event.seq, event.lamport,
                                          int(event.kind), event.raw, now, text))
            if new_own is not None:
                self.store.save_own_key(group.id, new_own.epoch, new_own.key, new_own.recipients)
            for member, blob in (copies or {}).items():
                self.store.add_copy(group.id, event.id, member, blob)
        if new_own is not None:
            group.keys.own = new_own
        group.own_ids.add(event.id)
        group.texts[event.id] = text
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
            log.warning("dropping message from %s: %s", short_id(sender), exc)
            return
        if isinstance(message, AckMessage):
            self._on_ack(sender, message)
            return
        if isinstance(message, VectorMessage):
            self.sync.on_vector(sender, message)
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
        text: str | None = None
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
                    new_state, text = K.decrypt_private(state, group.id, event.author,
                                                        event.epoch, body)
                    key_update = (event.author, event.epoch, new_state)
            elif isinstance(body, History) and body.member == self.me:
                self._read_history(group, event.author, body)
            elif isinstance(body, PairwiseMessage):
                blob = group.copies.get(event.id)
                if blob is not None:
                    text = K.decrypt_pairwise(self.identity, group.id, event.author, event.seq,
                                              body, blob)
        except DecryptError as exc:
            log.warning("group %s: cannot decrypt %s from %s: %s", self._label(group),
                        event.id.hex()[:12], short_id(event.author), exc)
        now = time.time()
        with self.store.transaction():
            self.store.add_event(EventRow(group.id, event.id, event.author, event.seq,
                                          event.lamport, int(event.kind), event.raw, now, text))
            if key_update is not None:
                self.store.save_peer_key(group.id, *key_update)
            if event.id in group.copies:
                self.store.add_copy(group.id, event.id, self.me, group.copies[event.id])
        if key_update is not None:
            group.keys.peers[(key_update[0], key_update[1])] = key_update[2]
        group.texts[event.id] = text
        group.joined_at[event.id] = now

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
                        and event.kind is Kind.MESSAGE and group.texts.get(event.id) is None):
                    message = decode_body(Kind.MESSAGE, event.body, mode=group.core.mode)
                    if isinstance(message, PrivateMessage):
                        unread.append((message.index, event, message))
            for _, event, message in sorted(unread, key=lambda x: x[0]):
                try:
                    state, text = K.decrypt_private(state, group.id, author, epoch, message)
                except DecryptError as exc:
                    log.info("group %s: history message %s stays unreadable: %s",
                             self._label(group), event.id.hex()[:12], exc)
                    continue
                self.store.set_text(event.id, text)
                group.texts[event.id] = text
                group.redecrypted.append(event)

    def _late_copy(self, group: Group, event: Event) -> None:
        """A pairwise copy for a message we stored unreadable (relayed without it)."""
        blob = group.copies.get(event.id)
        if blob is None or group.texts.get(event.id) is not None or event.kind is not Kind.MESSAGE:
            return
        body = decode_body(Kind.MESSAGE, event.body, mode=group.core.mode)
        if not isinstance(body, PairwiseMessage):
            return
        try:
            text = K.decrypt_pairwise(self.identity, group.id, event.author, event.seq, body, blob)
        except DecryptError as exc:
            log.warning("group %s: cannot decrypt %s from %s: %s", self._label(group),
                        event.id.hex()[:12], short_id(event.author), exc)
            return
        with self.store.transaction():
            self.store.add_copy(group.id, event.id, self.me, blob)
            self.store.set_text(event.id, text)
        group.texts[event.id] = text
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

    def _notify(self, group: Group, events: list[Event]) -> None:
        for watcher in list(group.watchers):
            for event in events:
                try:
                    watcher.send_nowait(event)
                except trio.WouldBlock:  # a follower that fell far behind: end its stream
                    watcher.close()
                    group.watchers.remove(watcher)
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    group.watchers.remove(watcher)
                    break
        self._changed.set()
        self._changed = trio.Event()

    def watch(self, group: Group) -> trio.MemoryReceiveChannel[Event]:
        send, receive = trio.open_memory_channel[Event](1024)
        group.watchers.append(send)
        return receive

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _label(self, group: Group) -> str:
        return group.core.state.name or group.id.hex()[:12]


class _NotAccepted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

