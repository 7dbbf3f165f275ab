"""Group events: the signed, content-addressed unit of everything in a group (pure).

Theory of operation
-------------------
An event is a msgpack array, canonical by construction (arrays, not maps; the
clock delta sorted by author; integers in their shortest form)::

    [1, group, author, seq, epoch, clock, lamport, kind, body, signature]

``group`` and ``author`` are 32 bytes; ``clock`` is the *delta* of the
author's vector clock against its previous event, a list of
``[author, seq]`` pairs sorted by author, without the author's own entry
(which is always ``seq - 1``). ``body`` is bytes whose schema depends on
``kind`` (``node.group.bodies``). The signature is Ed25519 over
``b"kith-event/1" || msgpack([group, author, seq, epoch, clock, lamport, kind, body])``
by the author's identity key, except for private-group messages, which are
signed by the author's sender key for ``epoch`` (its public half is in the
author's identity-signed SENDER_KEY event, which precedes the message).

The event id is BLAKE2b-256 of the whole encoded event. ``decode`` accepts
only the canonical encoding (it re-encodes and compares), so one event has
exactly one byte form and one id.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from node.errors import RemoteProtocolError

# ID_LEN, EventId and GroupId are defined in node.ids (so that wire/ needs no group/)
# and re-exported here, where the rest of the group layer has always found them.
from node.ids import ID_LEN as ID_LEN
from node.ids import PUBLIC_KEY_LEN, PeerId
from node.ids import EventId as EventId
from node.ids import GroupId as GroupId
from node.wire.strict import pack, unpack_strict

FORMAT = 1
SIGNING_CONTEXT = b"kith-event/1"
SIGNATURE_LEN = 64
#: Largest encoded event (a message of up to 64 KiB of ciphertext plus headers).
MAX_EVENT_LEN = 96 * 1024
MAX_BODY_LEN = 80 * 1024
#: Most entries in a clock delta; the delta stays small in practice (see docs/protocol.md).
MAX_CLOCK_ENTRIES = 512
#: Upper bound for seq and lamport: far beyond any real group, small enough to keep sane.
MAX_COUNTER = 2**40


class Kind(enum.IntEnum):
    CREATE = 1
    ADD = 2
    REMOVE = 3
    LEAVE = 4
    SET_ROLE = 5
    RENAME = 6
    BAN = 7
    SET_POLICY = 8
    SENDER_KEY = 9
    MESSAGE = 10
    RECEIPT = 11
    HISTORY = 12
    DELETE = 13
    PIN = 14
    MUTE = 15
    JOIN = 16
    APPROVE = 17
    UNBAN = 18
    RELAY = 19


MEMBERSHIP_KINDS = frozenset(
    {Kind.CREATE, Kind.ADD, Kind.REMOVE, Kind.LEAVE, Kind.SET_ROLE, Kind.RENAME, Kind.BAN,
     Kind.SET_POLICY, Kind.MUTE, Kind.JOIN, Kind.APPROVE, Kind.UNBAN, Kind.RELAY}
)
#: Kinds that act on an earlier event (named by id in the body's ``target``).
TARGETED_KINDS = frozenset({Kind.DELETE, Kind.PIN})
DEPARTURE_KINDS = frozenset({Kind.REMOVE, Kind.LEAVE, Kind.BAN})


class EventError(RemoteProtocolError):
    """A malformed, forged or otherwise unacceptable event."""


@dataclass(frozen=True, slots=True)
class UnsignedEvent:
    group: GroupId
    author: PeerId
    seq: int
    epoch: int
    clock: tuple[tuple[PeerId, int], ...]  # delta, sorted by author, author's own entry excluded
    lamport: int
    kind: Kind
    body: bytes

    def signing_bytes(self) -> bytes:
        return SIGNING_CONTEXT + pack(self._fields())

    def _fields(self) -> list[Any]:
        return [
            self.group, self.author, self.seq, self.epoch,
            [[a, s] for a, s in self.clock], self.lamport, int(self.kind), self.body,
        ]

    def signed(self, signature: bytes) -> Event:
        return Event(self, signature)


@dataclass(frozen=True, slots=True)
class Event:
    unsigned: UnsignedEvent
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    id: EventId = field(init=False, compare=False)

    def __post_init__(self) -> None:
        raw = pack([FORMAT, *self.unsigned._fields(), self.signature])
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "id", EventId(hashlib.blake2b(raw, digest_size=ID_LEN).digest()))

    # convenient read-through properties
    @property
    def group(self) -> GroupId:
        return self.unsigned.group

    @property
    def author(self) -> PeerId:
        return self.unsigned.author

    @property
    def seq(self) -> int:
        return self.unsigned.seq

    @property
    def epoch(self) -> int:
        return self.unsigned.epoch

    @property
    def clock(self) -> tuple[tuple[PeerId, int], ...]:
        return self.unsigned.clock

    @property
    def lamport(self) -> int:
        return self.unsigned.lamport

    @property
    def kind(self) -> Kind:
        return self.unsigned.kind

    @property
    def body(self) -> bytes:
        return self.unsigned.body

    @property
    def order_key(self) -> tuple[int, bytes, int]:
        """The one total order every node shows: (lamport, author, seq)."""
        return (self.lamport, bytes(self.author), self.seq)


def decode_event(raw: bytes) -> Event:
    """Strictly decode one event; ``EventError`` says what is wrong. Signatures are NOT checked."""
    if len(raw) > MAX_EVENT_LEN:
        raise EventError(f"event of {len(raw)} bytes exceeds {MAX_EVENT_LEN}")
    try:
        obj = unpack_strict(raw, max_len=MAX_EVENT_LEN)
    except RemoteProtocolError as exc:
        raise EventError(f"malformed event: {exc}") from exc
    if not isinstance(obj, list) or len(obj) != 10:
        raise EventError("an event is an array of 10 fields")
    fmt, group, author, seq, epoch, clock, lamport, kind, body, signature = obj
    if fmt != FORMAT:
        raise EventError(f"unknown event format {fmt!r}")
    _bytes(group, PUBLIC_KEY_LEN, "group")
    _bytes(author, PUBLIC_KEY_LEN, "author")
    _counter(seq, "seq", minimum=1)
    _counter(epoch, "epoch", minimum=0)
    _counter(lamport, "lamport", minimum=1)
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in Kind._value2member_map_:
        raise EventError(f"unknown event kind {kind!r}")
    if not isinstance(body, bytes) or len(body) > MAX_BODY_LEN:
        raise EventError("body must be bytes of at most 80 KiB")
    _bytes(signature, SIGNATURE_LEN, "signature")
    delta = _clock(clock, author, seq)
    event = Event(
        UnsignedEvent(GroupId(group), PeerId(author), seq, epoch, delta, lamport, Kind(kind), body),
        signature,
    )
    if event.raw != raw:
        raise EventError("event is not in canonical form")
    return event


def _bytes(value: object, length: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise EventError(f"{what} must be {length} bytes")


def _counter(value: object, what: str, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value < MAX_COUNTER:
        raise EventError(f"{what} must be an integer in {minimum}..2^40")


def _clock(value: object, author: bytes, seq: int) -> tuple[tuple[PeerId, int], ...]:
    if not isinstance(value, list):
        raise EventError("clock must be an array")
    if len(value) > MAX_CLOCK_ENTRIES:
        raise EventError(f"clock delta of {len(value)} entries exceeds {MAX_CLOCK_ENTRIES}")
    out: list[tuple[PeerId, int]] = []
    previous = b""
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise EventError("clock entries are [author, seq] pairs")
        who, count = entry
        _bytes(who, PUBLIC_KEY_LEN, "clock author")
        _counter(count, "clock seq", minimum=1)
        if who <= previous:
            raise EventError("clock entries must be sorted by author, without duplicates")
        if who == author:
            raise EventError("clock delta must not contain the author's own entry")
        previous = who
        out.append((PeerId(who), count))
    return tuple(out)
