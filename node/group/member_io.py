"""What goes into and comes out of a member core (``node.group.member``).

Theory of operation
-------------------
A ``Member`` is a pure state machine: ``handle(input, now) -> list[Effect]``.
Everything it needs from the world comes in as an input, everything it wants
done goes out as an effect, in the order it wants it done. A driver (the
node's ``GroupService``, or the simulator) runs the effects:

* ``Persist`` effects, all of them, in **one store transaction**, before
  anything else: an event is on disk before it is acknowledged or relayed,
  and our own sender-chain step before the ciphertext that used it leaves.
* then ``Send`` and ``SendMany`` effects, through the per-peer queues (never
  blocking);
* then ``Notify`` (watchers, UIs), ``Warn`` (a log line with a reason) and
  ``Wake`` (call ``handle(Tick(), at)`` at or after ``at``).

Payloads are the decoded form of the group's peer messages
(``node.wire.messages``): events travel as ``Event`` objects, so that the
simulator can hand them over without re-parsing bytes; the node's driver
encodes each payload once and sends the same bytes to every peer it goes to.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.crypto.sender_keys import OwnSenderKey, SenderKeyState
from node.group.content import Content
from node.group.events import Event, EventId
from node.ids import PeerId

# -- payloads (one group's peer messages) --


@dataclass(frozen=True, slots=True)
class Events:
    events: tuple[Event, ...]
    copies: tuple[tuple[EventId, bytes], ...] = ()  # pairwise: the receiver's own ciphertext
    sync: bool = False  # catch-up (outbox, invitation, anti-entropy), not live fanout
    #: (event id, recipient, sealed copy): a SENDER_KEY copy for another member, who was
    #: not reachable when its author made it, for the receiver to hold and pass on.
    held: tuple[tuple[EventId, PeerId, bytes], ...] = ()
    #: To a relay: store, then push to every member it is connected to (server-side
    #: fanout, node.group.relaying); ``held`` then carries every recipient's copy.
    fanout: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    ids: tuple[EventId, ...]
    #: "ack": stored; "unread": stored, but I cannot read them (to their author: not
    #: delivered); "readable": I can read them now (taking an "unread" back).
    kind: str = "ack"


@dataclass(frozen=True, slots=True)
class Got:
    """A cumulative acknowledgement: for each ``(author, seq)``, the sender has stored
    every event of ``author`` up to ``seq`` (delivery is causal, so per author contiguous)."""

    upto: tuple[tuple[PeerId, int], ...]


@dataclass(frozen=True, slots=True)
class Vector:
    vector: tuple[tuple[PeerId, int], ...]
    want: bool


@dataclass(frozen=True, slots=True)
class Typing:
    """The sender is typing (ephemeral: never stored)."""


Payload = Events | Ack | Got | Vector | Typing

# -- inputs --


@dataclass(frozen=True, slots=True)
class Received:
    sender: PeerId
    payload: Payload


@dataclass(frozen=True, slots=True)
class PeerUp:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class PeerDown:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: due nudges, ack timeouts, coalesced receipts."""


@dataclass(frozen=True, slots=True)
class Announce:
    """Exchange version vectors with every connected member (the periodic anti-entropy)."""


@dataclass(frozen=True, slots=True)
class HistoryWanted:
    """``peer`` may join this (open) group and asked for its events: we owe it the
    history, as the member who adds someone does (we push every event, then our
    vector; ``node.group.joining`` decides whether to accept)."""

    peer: PeerId


Input = Received | PeerUp | PeerDown | Tick | Announce | HistoryWanted

# -- effects --


@dataclass(frozen=True, slots=True)
class Send:
    peer: PeerId
    payload: Payload
    kind: str  # message, membership, rekey, sync, ack, vector, typing (for accounting)


@dataclass(frozen=True, slots=True)
class SendMany:
    """The same payload to each of ``peers`` (fanout: one effect, encoded once)."""

    peers: tuple[PeerId, ...]
    payload: Payload
    kind: str


@dataclass(frozen=True, slots=True)
class Notify:
    """These events were delivered or became readable (``events`` may be empty: a state
    change such as an ack or a vector, which UIs show as delivery marks)."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class TypingSeen:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class Warn:
    """Something was refused or dropped, and why (a log line for the driver)."""

    level: int  # logging level (20 info, 30 warning)
    text: str


@dataclass(frozen=True, slots=True)
class Wake:
    """Call ``handle(Tick(), now)`` at or after ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Authored:
    """A command produced this event of ours (returned, first, to the caller)."""

    event: Event


@dataclass(frozen=True, slots=True)
class Refused:
    """A command could not be done (one clear line for the user)."""

    reason: str


# -- what to persist (applied in one transaction per input) --


@dataclass(frozen=True, slots=True)
class SaveEvent:
    event: Event
    received_at: float
    text: str | None
    content: Content | None


@dataclass(frozen=True, slots=True)
class SaveOwnKey:
    epoch: int
    key: OwnSenderKey
    recipients: frozenset[PeerId]


@dataclass(frozen=True, slots=True)
class SaveOwnHistory:
    """The starting state of one of our epochs (handed to members who lack it later)."""

    epoch: int
    key: OwnSenderKey


@dataclass(frozen=True, slots=True)
class SavePeerKey:
    author: PeerId
    epoch: int
    state: SenderKeyState


@dataclass(frozen=True, slots=True)
class SaveCopy:
    event: EventId
    recipient: PeerId
    blob: bytes


@dataclass(frozen=True, slots=True)
class SetContent:
    event: EventId
    text: str | None
    content: Content | None


@dataclass(frozen=True, slots=True)
class EraseContent:
    """A deleted message (its text, content, copies and file go; a tombstone stays)."""

    event: EventId


@dataclass(frozen=True, slots=True)
class SaveEquivocation:
    author: PeerId
    seq: int
    first: EventId
    second: bytes
    at: float


@dataclass(frozen=True, slots=True)
class SetLeft:
    left: bool


@dataclass(frozen=True, slots=True)
class SetName:
    name: str


@dataclass(frozen=True, slots=True)
class SaveDelivery:
    """``member`` acknowledged our event (drivers may batch these: losing the last
    moment of them in a crash only means the member is sent those events again)."""

    event: EventId
    member: PeerId
    at: float


@dataclass(frozen=True, slots=True)
class SaveReadMarks:
    marks: tuple[tuple[PeerId, int], ...]


Persist = (
    SaveEvent | SaveOwnKey | SaveOwnHistory | SavePeerKey | SaveCopy | SetContent | EraseContent
    | SaveEquivocation | SetLeft | SetName | SaveDelivery | SaveReadMarks
)

Effect = Persist | Send | SendMany | Notify | TypingSeen | Warn | Wake | Authored | Refused
