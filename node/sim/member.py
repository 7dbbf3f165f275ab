"""One simulated member: the real group core and real crypto, glued as a node glues them.

Theory of operation
-------------------
``Member`` does what ``node.service.groups.GroupService`` and
``node.service.sync.Sync`` do on a real node, step for step, minus trio,
SQLite and sockets:

* **Sending** (``send``): in a private group, rotate the sender key first if
  it reached someone who is no longer a member (lazily, as the node does),
  encrypt once with the sender key and sign with its signing key; in a
  pairwise group, encrypt once per other member and sign with the identity
  key. The event goes through the member's own ``GroupCore``, then one copy
  per member (with that member's ciphertext in pairwise mode) goes to every
  member the network can reach.
* **Receiving** (``on_message``): events go through ``GroupCore.receive``
  (signature checks, causal order, membership); delivered SENDER_KEY events
  are opened, messages decrypted; every events message is acknowledged with
  the ids stored, as the node does.
* **Membership**: a member with a sender key hands its current chain to
  newcomers (one SENDER_KEY event each time someone joins); the member who
  added someone pushes it the history; every member pushes newcomers its own
  events (the outbox).
* **Reconnecting** (``link_up``): push our own events the peer has not
  acknowledged, then exchange version vectors; a vector that shows the peer
  behind starts a session streaming what it lacks (``node.sync.plan``), one
  batch at a time, each waiting for the ack of its last event. Events learnt
  by sync make the member announce its vector to everyone ``NUDGE_DELAY``
  later.

Every outgoing message is put in ``outbox`` (destination, payload, size,
kind); the simulation hands it to the network. Key material and nonces come
from the injected ``random.Random``, except the ephemeral keys of sealed
boxes (libsodium offers no way to inject them): those change ciphertext
bytes, never sizes, counts or order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from node.crypto import pairwise, sender_keys
from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import OwnSenderKey
from node.errors import DecryptError
from node.group.bodies import (
    Add,
    Body,
    PairwiseMessage,
    PrivateMessage,
    SenderKey,
    decode_body,
    encode_plaintext,
)
from node.group.events import Event, EventId, GroupId, Kind
from node.group.membership import MembershipEvent
from node.group.state import (
    Delivered,
    Dropped,
    Duplicate,
    Effect,
    GroupCore,
    MembershipChanged,
    Rejected,
)
from node.ids import PeerId
from node.service import keys as K
from node.service.sync import BATCH_BYTES, NUDGE_DELAY
from node.sim.clock import Scheduler
from node.sim.wire import Ack, Events, Payload, Vector, size_of
from node.sync.plan import Batcher, behind, missing
from node.testing.groups import Replica
from node.wire.messages import MAX_EVENTS


@dataclass(frozen=True, slots=True)
class Send:
    dst: PeerId
    payload: Payload
    size: int
    kind: str  # message, membership, rekey, sync, ack, vector


@dataclass(slots=True)
class Stats:
    """What a member counted (receiver side and rekeying)."""

    verifications: int = 0  # the core's signature checks of others' MESSAGE events
    decrypted: int = 0
    unreadable: int = 0  # delivered messages we could not decrypt (yet)
    rejected: int = 0
    dropped: int = 0
    rekey_events: int = 0  # SENDER_KEY events authored after set-up
    rekey_seals: int = 0  # chain keys sealed in them
    last_progress: float = 0.0  # when this member last delivered or decrypted something


@dataclass(slots=True)
class _Session:
    """A sync session streaming a peer what it lacks, a batch per ack."""

    batches: list[list[Event]]
    waiting: EventId | None = None


class Member:
    def __init__(
        self, replica: Replica, scheduler: Scheduler, rng: random.Random,
        connected: Callable[[PeerId], bool], peers: Callable[[], list[PeerId]],
    ) -> None:
        self.replica = replica
        self.identity: IdentityKey = replica.key
        self.me = replica.peer_id
        self.scheduler = scheduler
        self.rng = rng
        self.connected = connected
        self.peers = peers
        self.keys = K.GroupKeys()
        self.outbox: list[Send] = []
        self.stats = Stats()
        self.read_at: dict[EventId, float] = {}  # messages we decrypted, and when
        self.copies: dict[EventId, bytes] = {}  # pairwise: our copy of others' messages
        self.own_copies: dict[tuple[EventId, PeerId], bytes] = {}
        self.own_ids: set[EventId] = set()
        self.acked: dict[EventId, set[PeerId]] = {}
        self.peer_vectors: dict[PeerId, dict[PeerId, int]] = {}
        self.invited: set[PeerId] = set()
        #: Members at set-up, which hold every set-up event (as if acknowledged).
        self.setup_members: frozenset[PeerId] = frozenset()
        self.setup_frontier: dict[PeerId, int] = {}
        self._sessions: dict[PeerId, _Session] = {}
        self._nudged = False
        #: Set by the simulation: hands ``outbox`` to the network (used by timers).
        self.flush_outbox: Callable[[], None] = lambda: None
        self._count_verifications()

    @property
    def core(self) -> GroupCore:
        return self.replica.core

    @property
    def group(self) -> GroupId:
        return self.core.group_id

    @property
    def mode(self) -> str:
        return self.core.mode

    def _count_verifications(self) -> None:
        """Count the core's signature checks of messages (it checks in ``_signature_ok``)."""
        check = self.core._signature_ok
        stats, me = self.stats, self.me

        def counting(event: Event) -> bool | None:
            verdict = check(event)
            if verdict is not None and event.kind is Kind.MESSAGE and event.author != me:
                stats.verifications += 1
            return verdict

        setattr(self.core, "_signature_ok", counting)  # noqa: B010 (instance instrumentation)

    def set_core(self, core: GroupCore) -> None:
        self.replica.core = core
        self._count_verifications()

    # -- sending --

    def send(self, text: str) -> tuple[Event, K.Counters]:
        """Author one message as ``GroupService.send`` does; copies go to ``outbox``."""
        counters = K.Counters()
        members = self.core.state.members
        if self.me not in members:
            raise ValueError("not a member")
        if self.mode == "pairwise":
            return self._send_pairwise(text, counters), counters
        if K.needs_rotation(self.keys, set(members)):
            self.rotate()
        own = self.keys.own
        assert own is not None
        index = own.key.index
        new_key, used, blob = sender_keys.encrypt(
            own.key, encode_plaintext(text), K.private_ad(self.group, self.me, own.epoch, index),
            self.rng.randbytes)
        counters.encryptions += 1
        counters.signatures += 1
        new_own = K.OwnKey(own.epoch, new_key, own.recipients)
        event = self._author(PrivateMessage(used, blob), new_own=new_own, counters=counters,
                             kind="message")
        return event, counters

    def _send_pairwise(self, text: str, counters: K.Counters) -> Event:
        seq = self.core.frontier.get(self.me, 0) + 1
        plaintext = encode_plaintext(text)
        salt = pairwise.new_salt(self.rng.randbytes)
        ad = K.pairwise_ad(self.group, self.me, seq)
        copies = {}
        for member in self.core.state.members:
            if member != self.me:
                copies[member] = pairwise.encrypt_for(self.identity, member, plaintext, ad,
                                                      self.rng.randbytes)
                counters.encryptions += 1
        counters.signatures += 1
        body = PairwiseMessage(salt, pairwise.commitment(plaintext, salt))
        return self._author(body, copies=copies, counters=counters, kind="message")

    def rotate(self) -> Event:
        """A fresh sender key sealed to every other member (``K.new_sender_key``)."""
        epoch = 0 if self.keys.own is None else self.keys.own.epoch + 1
        key = OwnSenderKey.generate(self.rng.randbytes)
        recipients = frozenset(m for m in self.core.state.members if m != self.me)
        body = K.distribution(key, epoch, recipients)
        return self._author(body, new_own=K.OwnKey(epoch, key, recipients), kind="rekey")

    def author(self, body: Body, kind: str = "membership") -> Event:
        """Author a membership event (ADD, REMOVE...) as the node's ``_author`` does."""
        event = self._author(body, kind=kind)
        if isinstance(body, Add):
            self._invite(body.member)
        return event

    def _author(
        self, body: Body, *, new_own: K.OwnKey | None = None,
        copies: dict[PeerId, bytes] | None = None, counters: K.Counters | None = None,
        kind: str,
    ) -> Event:
        epoch = new_own.epoch if new_own is not None else self._epoch()
        audience = set(self.core.state.members)  # before: a removed member hears of it
        self.replica.epoch = epoch
        sign = new_own.key.sign if isinstance(body, PrivateMessage) and new_own else None
        event, effects = self.replica.author_effects(body, sign=sign)
        if new_own is not None:
            self.keys.own = new_own
        self.own_ids.add(event.id)
        if event.kind is Kind.MESSAGE:
            self.read_at[event.id] = self.scheduler.now
        for member, blob in (copies or {}).items():
            self.own_copies[(event.id, member)] = blob
        if isinstance(body, SenderKey) and kind == "rekey":
            self.stats.rekey_events += 1
            self.stats.rekey_seals += len(body.keys)
        sent = self._fanout(event, copies or {}, audience, kind)
        if counters is not None:
            counters.bytes_out += sent
        self._after_delivery(effects)
        return event

    def _epoch(self) -> int:
        return self.keys.own.epoch if self.keys.own is not None else 0

    def _fanout(self, event: Event, copies: dict[PeerId, bytes], audience: set[PeerId],
                kind: str) -> int:
        total = 0
        shared = Events((event,))
        shared_size = size_of(self.group, shared)
        for member in sorted(set(self.core.state.members) | audience):
            if member == self.me or not self.connected(member):
                continue
            payload, size = shared, shared_size
            if member in copies and event.kind is Kind.MESSAGE:
                payload = Events((event,), ((event.id, copies[member]),))
                size = size_of(self.group, payload)
            self.outbox.append(Send(member, payload, size, kind))
            total += size
        return total

    # -- membership side effects --

    def _after_delivery(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Delivered) and isinstance(effect.body, Add) \
                    and effect.event.author == self.me:
                self.invited.add(effect.body.member)
            if isinstance(effect, MembershipChanged):
                self._membership_changed(effect)

    def _membership_changed(self, change: MembershipChanged) -> None:
        added = set(change.after.members) - set(change.before.members)
        newcomers = frozenset(p for p in added if p != self.me)
        for peer in sorted(newcomers):
            self._flush(peer)
        own = self.keys.own
        if own is not None and newcomers and self.me in change.after.members:
            body = K.distribution(own.key, own.epoch, newcomers)
            updated = K.OwnKey(own.epoch, own.key, own.recipients | newcomers)
            self._author(body, new_own=updated, kind="rekey")

    def _invite(self, peer: PeerId) -> None:
        if self.connected(peer):
            self._push(peer, self.core.ordered())

    def has(self, peer: PeerId, event: Event) -> bool:
        """Does ``peer`` have ``event`` (acked, in its last vector, or from set-up)?"""
        if peer in self.acked.get(event.id, ()):
            return True
        vector = self.peer_vectors.get(peer)
        if vector is None and peer in self.setup_members:
            vector = self.setup_frontier
        return vector is not None and vector.get(event.author, 0) >= event.seq

    def _flush(self, peer: PeerId) -> None:
        members = self.core.state.members
        if peer not in members or self.me not in members:
            return
        invited = peer in self.invited
        pending = [e for e in self.core.ordered()
                   if not self.has(peer, e) and (e.author == self.me or invited)]
        if pending:
            self._push(peer, pending)

    def _push(self, peer: PeerId, events: list[Event]) -> None:
        for batch in _batches(events):
            self._send_batch(peer, batch)

    def _send_batch(self, peer: PeerId, batch: list[Event]) -> None:
        copies = tuple((e.id, self.own_copies[(e.id, peer)]) for e in batch
                       if (e.id, peer) in self.own_copies)
        payload = Events(tuple(batch), copies, sync=True)
        self.outbox.append(Send(peer, payload, size_of(self.group, payload), "sync"))

    # -- receiving --

    def on_message(self, sender: PeerId, payload: Payload) -> None:
        if isinstance(payload, Ack):
            self._on_ack(sender, payload)
        elif isinstance(payload, Vector):
            self._on_vector(sender, payload)
        elif isinstance(payload, Events):
            stored = self._receive(payload)
            if stored:
                ack = Ack(tuple(stored[:MAX_EVENTS]))
                self.outbox.append(Send(sender, ack, size_of(self.group, ack), "ack"))

    def _receive(self, message: Events) -> list[EventId]:
        stored: list[EventId] = []
        reactions: list[Effect] = []
        late: list[Event] = []
        copies = dict(message.copies)
        for event in message.events:
            if event.kind is Kind.MESSAGE and event.id in copies:
                self.copies[event.id] = copies[event.id]
            for effect in self.core.receive(event):
                if isinstance(effect, Delivered):
                    self._store_delivered(effect)
                    stored.append(effect.event.id)
                    reactions.append(effect)
                elif isinstance(effect, MembershipChanged):
                    reactions.append(effect)
                elif isinstance(effect, Duplicate):
                    if not self.core.is_waiting(effect.event):
                        stored.append(effect.event.id)
                        late.append(effect.event)
                elif isinstance(effect, Rejected):
                    self.stats.rejected += 1
                elif isinstance(effect, Dropped):
                    self.stats.dropped += 1
        if reactions:
            self._after_delivery(reactions)
            if message.sync:
                self._nudge()
        for event in late:
            self._late_copy(event)
        return stored

    def _store_delivered(self, delivered: Delivered) -> None:
        event, body = delivered.event, delivered.body
        self.stats.last_progress = self.scheduler.now
        try:
            if isinstance(body, SenderKey):
                state = K.open_distribution(self.identity, body)
                known = self.keys.peers.get((event.author, body.epoch))
                if state is not None and (known is None or known.index < state.index):
                    self.keys.peers[(event.author, body.epoch)] = state
            elif isinstance(body, PrivateMessage):
                peer_state = self.keys.peers.get((event.author, event.epoch))
                if peer_state is None:
                    self.stats.unreadable += 1
                    return
                new_state, _ = K.decrypt_private(peer_state, self.group, event.author,
                                                 event.epoch, body)
                self.keys.peers[(event.author, event.epoch)] = new_state
                self._read(event)
            elif isinstance(body, PairwiseMessage):
                blob = self.copies.get(event.id)
                if blob is None:
                    self.stats.unreadable += 1
                    return
                K.decrypt_pairwise(self.identity, self.group, event.author, event.seq, body, blob)
                self._read(event)
        except DecryptError:
            self.stats.unreadable += 1

    def _read(self, event: Event) -> None:
        self.read_at[event.id] = self.scheduler.now
        self.stats.decrypted += 1
        self.stats.last_progress = self.scheduler.now

    def _late_copy(self, event: Event) -> None:
        """A pairwise copy for a message that arrived (relayed) without ours."""
        blob = self.copies.get(event.id)
        if blob is None or event.id in self.read_at or event.kind is not Kind.MESSAGE:
            return
        if self.mode != "pairwise":
            return
        body = decode_body(Kind.MESSAGE, event.body, mode="pairwise")
        assert isinstance(body, PairwiseMessage)
        try:
            K.decrypt_pairwise(self.identity, self.group, event.author, event.seq, body, blob)
        except DecryptError:
            return
        self.stats.unreadable -= 1
        self._read(event)

    def _on_ack(self, sender: PeerId, ack: Ack) -> None:
        for event_id in ack.ids:
            if event_id in self.own_ids:
                self.acked.setdefault(event_id, set()).add(sender)
        session = self._sessions.get(sender)
        if session is not None and session.waiting in ack.ids:
            self._next_batch(sender, session)

    # -- sync (node.service.sync) --

    def link_up(self, peer: PeerId) -> None:
        """A channel to ``peer`` came up: push what it has not acked, then announce."""
        self._flush(peer)
        self.announce(peer)

    def announce(self, peer: PeerId) -> None:
        if self._shared(peer) and self.connected(peer):
            self._send_vector(peer, want=True)

    def _nudge(self) -> None:
        if self._nudged:
            return
        self._nudged = True
        self.scheduler.after(NUDGE_DELAY, self._announce_all)

    def _announce_all(self) -> None:
        self._nudged = False
        for peer in self.peers():
            self.announce(peer)
        self.flush_outbox()

    def _shared(self, peer: PeerId) -> bool:
        members = self.core.state.members
        if self.me not in members:
            return False
        return peer in members or self._departure(peer) is not None

    def _departure(self, peer: PeerId) -> MembershipEvent | None:
        if peer in self.core.state.members:
            return None
        for dep in reversed(self.core.state.departures):
            if dep.member == peer:
                return dep.event
        return None

    def _send_vector(self, peer: PeerId, *, want: bool) -> None:
        vector = tuple(sorted((a, n) for a, n in self.core.frontier.items() if n > 0))
        payload = Vector(vector, want)
        self.outbox.append(Send(peer, payload, size_of(self.group, payload), "vector"))

    def _on_vector(self, sender: PeerId, message: Vector) -> None:
        if not self._shared(sender):
            return
        theirs = dict(message.vector)
        self.peer_vectors[sender] = theirs
        mine = self.core.frontier
        if behind(mine, theirs):
            self._start(sender, theirs)
        if message.want and behind(theirs, mine):
            self._send_vector(sender, want=False)

    def _start(self, peer: PeerId, theirs: dict[PeerId, int]) -> None:
        departure = self._departure(peer)
        events = [e for e in missing(self.core.delivered_order(), theirs)
                  if departure is None or departure.saw(e.author, e.seq)]
        session = _Session(_batches(events))
        self._sessions[peer] = session  # a newer vector supersedes the old session
        self._next_batch(peer, session)

    def _next_batch(self, peer: PeerId, session: _Session) -> None:
        if not session.batches or not self.connected(peer):
            self._sessions.pop(peer, None)
            return
        batch = session.batches.pop(0)
        session.waiting = batch[-1].id
        self._send_batch(peer, batch)


def _batches(events: list[Event]) -> list[list[Event]]:
    batcher: Batcher[Event] = Batcher(MAX_EVENTS, BATCH_BYTES)
    out = []
    for event in events:
        full = batcher.add(event, len(event.raw))
        if full is not None:
            out.append(full)
    rest = batcher.flush()
    if rest is not None:
        out.append(rest)
    return out
