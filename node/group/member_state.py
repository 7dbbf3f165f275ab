"""What one member remembers of one group, and the views it derives (pure).

Theory of operation
-------------------
``MemberState`` is the data half of the member core (``node.group.member``):
the replicated log (``GroupCore``), the key material, what each event
decrypted to, who acknowledged what, the vectors peers sent, who is
connected, and the sync sessions under way. The behaviour is layered on top
in one module per concern, each a subclass of the one below it::

    MemberState -> Delivery -> Authoring -> Receiving -> Sessions -> Member

While ``handle`` runs, effects are appended to ``self.out`` and the input's
time is ``self.now``; nothing here reads a clock or draws randomness except
through ``self.rng``, which the driver injects.

The conversation (posts with their edits, reactions and tombstones) is folded
incrementally: posts do not depend on each other's order, so new posts join
the fold wherever the total order puts them; edits and reactions do, so a new
one joins only if it comes after every edit and reaction folded so far.
Anything else (an edit or reaction ordered before one already folded, a
delete, a content change, a membership change, which may withdraw or mute
earlier messages) starts a new fold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import OwnSenderKey
from node.group import keys as K
from node.group.content import Content, Conversation, ConversationFold, Edit, Item, Post, React
from node.group.events import Event, EventId, GroupId, Kind
from node.group.member_io import Effect, Notify, Payload, Send, Wake, Warn
from node.group.membership import Membership, MembershipEvent
from node.group.state import GroupCore
from node.ids import PeerId

#: Stay well under the channel's 1 MiB message cap when batching events.
BATCH_BYTES = 512 * 1024
#: After relayed events arrive, tell the other members this much later (coalesces bursts).
NUDGE_DELAY = 0.2
#: A sync batch not acknowledged within this many seconds ends the session (retried later).
ACK_TIMEOUT = 30.0
#: What sync may stream to one peer: on average at most ``SYNC_RATE`` bytes a second, in
#: bursts of at most ``SYNC_BURST`` (a token bucket per peer); a session out of tokens
#: pauses until it has enough for its next batch.
SYNC_RATE = 1024 * 1024
SYNC_BURST = 4 * 1024 * 1024
#: The same vector from the same peer, with nothing new on our side, is answered again
#: (a session, or our vector back) only after this many seconds.
RESYNC_AFTER = 60.0
#: Sender-key chain steps we walk for one author's messages (each step two HMACs): at
#: most ``MAX_JUMP`` for one message (node.crypto.sender_keys), and on average at most
#: ``WALK_RATE`` a second, in bursts of ``WALK_BURST``. In-order delivery needs one
#: step per message; only messages we could not decrypt leave gaps to walk over.
WALK_RATE = 1000
WALK_BURST = 10_000
#: A member's vector says we authored more than we hold (a restored backup, a copied
#: data directory): we author nothing for this long while it is connected, so sync
#: brings our own events back first and no seq is used twice. (Bounded: a liar cannot
#: keep us silent.)
CATCH_UP_WAIT = 30.0
#: A typing notice is sent at most this often per group, and shown this long.
TYPING_INTERVAL = 3.0
TYPING_SHOWN = 5.0


def display_text(content: Content | None) -> str | None:
    """What the ``text`` column holds for a content: the text, or a reaction's emoji."""
    if isinstance(content, Post | Edit):
        return content.text
    if isinstance(content, React):
        return content.emoji
    return None


@dataclass(slots=True)
class _Fold:
    """The conversation folded so far."""

    key: tuple[int, int]  # (version, deletes) it was made under
    state: Membership  # the membership state it was made under (never changed in place)
    folder: ConversationFold
    done: int = 0  # how many delivered events (in delivery order) it has taken in
    last: tuple[int, bytes, int] | None = None  # order key of its last edit or reaction


@dataclass(slots=True)
class Session:
    """A sync session streaming a peer what it lacks, one batch per acknowledgement."""

    batches: list[list[Event]]
    waiting: EventId | None = None
    deadline: float = 0.0
    sent: int = 0
    resume_at: float | None = None  # paused for want of budget until then


@dataclass(slots=True)
class Budget:
    """A token bucket: ``rate`` units a second, at most ``burst`` at once (full at first)."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, size: int, now: float) -> float | None:
        """Spend ``size`` units: None if done, else when there will be enough."""
        if self.tokens < 0:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        need = min(size, self.burst)
        if self.tokens >= need:
            self.tokens -= need
            return None
        return now + (need - self.tokens) / self.rate


class Links(Protocol):
    """Who we have a channel to (a set on a node; a view of the network in the simulator)."""

    def __contains__(self, peer: object) -> bool: ...

    def __iter__(self) -> Iterator[PeerId]: ...

    def add(self, peer: PeerId) -> None: ...

    def discard(self, peer: PeerId) -> None: ...


@dataclass(slots=True)
class Settings:
    """Per-node choices that change what a member does."""

    read_receipts: bool = True
    #: "client": the author pushes each event to every connected member (and relay);
    #: "relay": one copy to one connected relay, flagged for it to fan out (falling back
    #: to "client" when no relay is connected; node.group.authoring).
    fanout: str = "client"


class MemberState:
    """One group as one member holds it (see the module docstring)."""

    def __init__(
        self, identity: IdentityKey, core: GroupCore, rng: K.Rng, *,
        joined_at: float = 0.0, settings: Settings | None = None,
    ) -> None:
        self.identity = identity
        self.me: PeerId = identity.peer_id
        self.core = core
        self.rng = rng
        self.joined = joined_at
        self.settings = settings or Settings()
        self.keys = K.GroupKeys()
        self.own_history: list[tuple[int, OwnSenderKey]] = []  # each epoch's starting key
        self.texts: dict[EventId, str | None] = {}
        self.contents: dict[EventId, Content] = {}  # decrypted message content
        # our copy of others' pairwise messages and committed SENDER_KEYs
        self.copies: dict[EventId, bytes] = {}
        # the copies of our own such events, per member
        self.own_copies: dict[EventId, dict[PeerId, bytes]] = {}
        #: Our SENDER_KEYs and pairwise copies pushed again to a member that could not
        #: read (once each per channel: ``node.group.delivery``).
        self.keys_resent: set[tuple[EventId, PeerId]] = set()
        #: Committed SENDER_KEY copies we hold for other members (``node.group.key_copies``).
        self.held: dict[EventId, dict[PeerId, bytes]] = {}
        self.held_bytes = 0
        self.acked: dict[EventId, dict[PeerId, float]] = {}
        self.joined_at: dict[EventId, float] = {}  # received_at per event
        self.counters: dict[EventId, K.Counters] = {}
        self.invited: set[PeerId] = set()  # members we added (we owe them history)
        #: The last version vector each member sent us (tells what it has).
        self.peer_vectors: dict[PeerId, dict[PeerId, int]] = {}
        self.own_ids: set[EventId] = set()
        self.equivocated: set[tuple[PeerId, int]] = set()
        #: Read receipts: reader -> author -> highest seq it has read.
        self.read: dict[PeerId, dict[PeerId, int]] = {}
        self.unread_receipt = False  # we read something not yet announced
        self.read_marks: dict[PeerId, int] = {}  # local: author -> seq read
        self.notify_muted = False  # local: no notifications for this group
        self.typing: dict[PeerId, float] = {}  # member -> when it last typed
        self.typing_sent = -TYPING_INTERVAL
        self.version = 0  # bumped when a content changes without a new event (cache key)
        self.connected: Links = set[PeerId]()
        self.sessions: dict[PeerId, Session] = {}
        #: Per peer: the vector (and how much we held) we last answered, and when, so a
        #: repeated vector costs nothing (see ``node.group.sessions``).
        self.answered: dict[PeerId, tuple[dict[PeerId, int], int, float]] = {}
        self.replied: dict[PeerId, tuple[dict[PeerId, int], int, float]] = {}
        self.budgets: dict[PeerId, Budget] = {}  # sync bytes, per peer
        self.walks: dict[PeerId, Budget] = {}  # chain steps, per author
        #: Our messages members told us they stored but cannot read (not delivered).
        self.unreadable_by: dict[EventId, set[PeerId]] = {}
        #: Others' messages we stored but cannot read, to tell their authors (who
        #: would otherwise count them delivered), by author.
        self.unread_reports: dict[PeerId, set[EventId]] = {}
        self.told_unread: set[EventId] = set()  # ...and those we told them of
        #: Peers whose vector showed more of our own events than we hold, since when.
        self.own_claims: dict[PeerId, float] = {}
        #: Our own events came back from others (our store was behind): the next
        #: message starts a fresh sender key, never reusing a message key.
        self.rewound = False
        self.nudge_at: float | None = None
        self.rejected = 0  # events refused (counted for the research harness)
        self.dropped = 0
        #: Members at set-up that hold every set-up event (simulator: as if acknowledged).
        self.setup_members: frozenset[PeerId] = frozenset()
        self.setup_frontier: dict[PeerId, int] = {}
        self.out: list[Effect] = []
        self.now = 0.0
        self._fold: _Fold | None = None

    @property
    def id(self) -> GroupId:
        return self.core.group_id

    @property
    def label(self) -> str:
        return self.core.state.name or self.id.hex()[:12]

    # -- effects --

    def send(self, peer: PeerId, payload: Payload, kind: str) -> bool:
        """Queue ``payload`` for ``peer`` if it is connected (and not us)."""
        if peer == self.me or peer not in self.connected:
            return False
        self.out.append(Send(peer, payload, kind))
        return True

    def warn(self, text: str, level: int = logging.WARNING) -> None:
        self.out.append(Warn(level, text))

    def notify(self, events: Sequence[Event] = ()) -> None:
        self.out.append(Notify(tuple(events)))

    def nudge(self) -> None:
        """Announce our vector to every connected member soon (once for a burst)."""
        if self.nudge_at is None:
            self.nudge_at = self.now + NUDGE_DELAY
            self.out.append(Wake(self.nudge_at))

    # -- what peers have --

    def has(self, peer: PeerId, event: Event) -> bool:
        """Does ``peer`` have ``event`` (acked it, or its vector says so)?"""
        if peer in self.acked.get(event.id, {}):
            return True
        vector = self.peer_vectors.get(peer)
        if vector is None and peer in self.setup_members:
            vector = self.setup_frontier
        return vector is not None and vector.get(event.author, 0) >= event.seq

    def departure(self, peer: PeerId) -> MembershipEvent | None:
        """The event by which ``peer`` left the group (if it did, and is not back)."""
        if peer in self.core.state.members:
            return None
        for dep in reversed(self.core.state.departures):
            if dep.member == peer:
                return dep.event
        return None

    def last_messages_of_others(self) -> dict[PeerId, int]:
        """Per other author, the seq of its latest delivered message (read positions)."""
        return {a: n for a, n in self.core.last_message.items() if a != self.me}

    def vector(self) -> tuple[tuple[PeerId, int], ...]:
        return tuple(sorted((a, n) for a, n in self.core.frontier.items() if n > 0))

    def epoch(self) -> int:
        return self.keys.own.epoch if self.keys.own is not None else 0

    def catching_up(self) -> int:
        """Our own seq a connected member holds beyond ours (while we wait for it), or 0."""
        have = self.core.frontier.get(self.me, 0)
        claimed = max((self.peer_vectors.get(p, {}).get(self.me, 0)
                       for p, since in self.own_claims.items()
                       if p in self.connected and self.now - since < CATCH_UP_WAIT), default=0)
        return claimed if claimed > have else 0

    # -- the conversation --

    def conversation(self) -> Conversation:
        """Posts with their edits, reactions and tombstones (folded incrementally)."""
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
        while its batch was being handled), the next ``conversation()`` folds anew."""
        self.contents[event_id] = content
        if self._fold is not None and self._fold.folder.has(event_id):
            self.version += 1

    def is_typing(self, peer: PeerId, now: float) -> bool:
        return now - self.typing.get(peer, -TYPING_SHOWN) < TYPING_SHOWN
