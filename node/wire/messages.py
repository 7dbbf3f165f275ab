"""Application messages between two nodes, inside a channel (pure).

Each channel message is one msgpack map with a type ``t``:

``events``  ``{"t": "events", "g": group, "evc": [compact event, ...], "cp": [[event id, copy],
             ...], "sync": true}``
    Group events, oldest first: in ``evc``, each event's encoding (``node.group.events``)
    without its group element (the message's ``g``, which the receiver puts back before
    decoding, hashing or verifying; the event and its id are unchanged); or, in the full
    form ``ev`` (still accepted), as encoded. ``cp`` is omitted when empty and ``sync``
    when false. ``cp``
    carries the receiver's own copies (keyed by event id): the ciphertext of a
    pairwise-mode message, the sealed chain state of a SENDER_KEY; then
    ``[event id, copy, recipient]`` entries, sender-key copies for another
    member, to hold and pass on (docs/protocol.md section 13); it is empty
    otherwise. ``sync`` is true for
    catch-up batches (answering a version vector), false for live fanout.
    ``fo`` (omitted when false) asks a relay of the group to store the events and
    push them to every member it is connected to (server-side fanout); the ``cp``
    entries are then every recipient's copy, ``[event id, copy, recipient]``.
``got``     ``{"t": "got", "g": group, "upto": [[author, seq], ...]}``
    A cumulative acknowledgement: for each author listed (sorted, distinct),
    the sender has stored (committed) every event of that author with a seq up
    to ``seq``. Coalesced: one per peer per group per short window, or per sync
    batch.
``ack``     ``{"t": "ack", "g": group, "ids": [event id, ...]}``
    The sender has stored these events (per-id receipts: older nodes send them
    for every message; newer ones only to close a sync batch).
``unread``  ``{"t": "unread", "g": group, "ids": [event id, ...]}``
    The sender has stored these messages of the receiver's but cannot read them
    (sent to their author: they are not delivered to it).
``readable`` ``{"t": "readable", "g": group, "ids": [event id, ...]}``
    The sender can now read these messages it said it could not.
``vv``      ``{"t": "vv", "g": group, "vv": [[author, seq], ...], "want": bool}``
    The sender's version vector: for each author, the highest seq it has with
    every earlier one (sorted by author). With ``want`` it asks the receiver
    to stream back the events the sender lacks (one member at a time is
    asked); without, it only tells (docs/protocol.md section 14).
``typing``  ``{"t": "typing", "g": group}``
    The sender is typing in the group: ephemeral, shown for a few seconds,
    never stored or relayed.
``want``    ``{"t": "want", "g": group, "h": [chunk address, ...]}``
    Attachment chunks the sender asks for (at most ``MAX_WANT``).
``chunk``   ``{"t": "chunk", "g": group, "h": address, "d": bytes}``
    One encrypted attachment chunk (at most ``MAX_CHUNK`` bytes), answering a ``want``.
``nochunk`` ``{"t": "nochunk", "g": group, "h": [chunk address, ...]}``
    The sender does not have (or will not give) these chunks: ask someone else.

Strict: exactly these keys, the right types, at most ``MAX_EVENTS`` events or
ids per message; unknown types are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import RemoteProtocolError
from node.files.attachment import HASH_LEN, MAX_CHUNK
from node.ids import ID_LEN, EventId, GroupId, PeerId
from node.wire.strict import pack, unpack_strict

MAX_EVENTS = 256
MAX_MESSAGE = 1024 * 1024
MAX_COPY = 128 * 1024
#: Most ``cp`` entries in one message (a relay gets every recipient's copy of an event).
MAX_COPIES = 8192
#: Authors in a version vector: a group's members over its whole life.
MAX_VECTOR = 20_000
#: Most chunk addresses in one ``want`` or ``nochunk``.
MAX_WANT = 32

# An event is the msgpack array [1, group, ...] of 10 elements (node.group.events): fixarray
# 10, the format 1, then the group as bin8 of 32 bytes. The compact form drops the group:
# fixarray 9, the format 1, then the event's remaining elements, byte for byte.
_FULL_HEAD = b"\x9a\x01\xc4\x20"
_HEAD_LEN = len(_FULL_HEAD)
_GROUP_END = _HEAD_LEN + ID_LEN
_COMPACT_HEAD = b"\x99\x01"
#: Bytes an event takes less in ``evc`` than in ``ev`` (its group as a bin8 of 32).
GROUP_ELEMENT_LEN = 2 + ID_LEN


@dataclass(frozen=True, slots=True)
class EventsMessage:
    group: GroupId
    events: tuple[bytes, ...]
    copies: tuple[tuple[EventId, bytes], ...] = ()
    sync: bool = False
    #: (event id, recipient, copy): copies to hold for other members, sent in ``cp`` as
    #: three-element entries ``[event id, copy, recipient]`` after the receiver's own.
    held: tuple[tuple[EventId, PeerId, bytes], ...] = ()
    #: Sent to a relay: fan these events out (``fo``).
    fanout: bool = False


@dataclass(frozen=True, slots=True)
class AckMessage:
    group: GroupId
    ids: tuple[EventId, ...]
    kind: str = "ack"  # or "unread", "readable" (the same shape)


@dataclass(frozen=True, slots=True)
class GotMessage:
    """Cumulative receipt: every event of each author up to its seq is stored."""

    group: GroupId
    upto: tuple[tuple[PeerId, int], ...]


@dataclass(frozen=True, slots=True)
class VectorMessage:
    group: GroupId
    vector: tuple[tuple[PeerId, int], ...]
    want: bool = False


@dataclass(frozen=True, slots=True)
class TypingMessage:
    """The sender is typing in ``group`` (ephemeral: shown a few seconds, never stored)."""

    group: GroupId


@dataclass(frozen=True, slots=True)
class WantMessage:
    """Send me these attachment chunks (content addresses) of ``group``."""

    group: GroupId
    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ChunkMessage:
    """One encrypted attachment chunk; the receiver checks ``data`` hashes to ``address``."""

    group: GroupId
    address: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class NoChunkMessage:
    """The sender has none of these chunks to give (the asker tries another member)."""

    group: GroupId
    addresses: tuple[bytes, ...]


ChunkTraffic = WantMessage | ChunkMessage | NoChunkMessage
PeerMessage = (EventsMessage | AckMessage | GotMessage | VectorMessage | TypingMessage
               | ChunkTraffic)


def encode_message(message: PeerMessage) -> bytes:
    if isinstance(message, EventsMessage):
        return pack(_events_map(message))
    if isinstance(message, VectorMessage):
        return pack({"t": "vv", "g": message.group, "vv": [[a, n] for a, n in message.vector],
                     "want": message.want})
    if isinstance(message, GotMessage):
        return pack({"t": "got", "g": message.group, "upto": [[a, n] for a, n in message.upto]})
    if isinstance(message, TypingMessage):
        return pack({"t": "typing", "g": message.group})
    if isinstance(message, WantMessage):
        return pack({"t": "want", "g": message.group, "h": list(message.addresses)})
    if isinstance(message, NoChunkMessage):
        return pack({"t": "nochunk", "g": message.group, "h": list(message.addresses)})
    if isinstance(message, ChunkMessage):
        return pack({"t": "chunk", "g": message.group, "h": message.address, "d": message.data})
    return pack({"t": message.kind, "g": message.group, "ids": list(message.ids)})


def decode_message(data: bytes) -> PeerMessage:
    obj = unpack_strict(data, max_len=MAX_MESSAGE)
    if not isinstance(obj, dict):
        raise RemoteProtocolError("peer message is not a map")
    kind = obj.get("t")
    group = obj.get("g")
    if not isinstance(group, bytes) or len(group) != 32:
        raise RemoteProtocolError("peer message: 'g' must be a 32-byte group id")
    if kind == "events":
        events = _events(obj, group)
        copies = obj.get("cp", [])
        if not isinstance(copies, list) or len(copies) > MAX_COPIES:
            raise RemoteProtocolError("'cp' must be a list")
        out, held = [], []
        for item in copies:
            if (not isinstance(item, list) or len(item) not in (2, 3) or not _is_id(item[0])
                    or not isinstance(item[1], bytes) or len(item[1]) > MAX_COPY
                    or (len(item) == 3 and not _is_id(item[2]))):
                raise RemoteProtocolError("'cp' entries are [event id, ciphertext(, recipient)]")
            if len(item) == 3:
                held.append((EventId(item[0]), PeerId(item[2]), item[1]))
            else:
                out.append((EventId(item[0]), item[1]))
        return EventsMessage(GroupId(group), events, tuple(out),
                             _bool(obj.get("sync", False), "sync"), tuple(held),
                             _bool(obj.get("fo", False), "fo"))
    if kind in ("ack", "unread", "readable"):
        _keys(obj, {"t", "g", "ids"})
        ids = obj["ids"]
        if not isinstance(ids, list) or len(ids) > MAX_EVENTS or not all(_is_id(i) for i in ids):
            raise RemoteProtocolError(f"'ids' must be a list of at most {MAX_EVENTS} event ids")
        return AckMessage(GroupId(group), tuple(EventId(i) for i in ids), kind)
    if kind == "got":
        _keys(obj, {"t", "g", "upto"})
        return GotMessage(GroupId(group), _vector(obj["upto"], "upto"))
    if kind == "vv":
        _keys(obj, {"t", "g", "vv", "want"})
        return VectorMessage(GroupId(group), _vector(obj["vv"]), _bool(obj["want"], "want"))
    if kind == "typing":
        _keys(obj, {"t", "g"})
        return TypingMessage(GroupId(group))
    if kind in ("want", "nochunk"):
        _keys(obj, {"t", "g", "h"})
        addresses = obj["h"]
        if (not isinstance(addresses, list) or not 0 < len(addresses) <= MAX_WANT
                or not all(_is_address(a) for a in addresses)):
            raise RemoteProtocolError(f"'h' must be 1..{MAX_WANT} chunk addresses")
        cls = WantMessage if kind == "want" else NoChunkMessage
        return cls(GroupId(group), tuple(addresses))
    if kind == "chunk":
        _keys(obj, {"t", "g", "h", "d"})
        if not _is_address(obj["h"]):
            raise RemoteProtocolError("'h' must be a chunk address")
        if not isinstance(obj["d"], bytes) or len(obj["d"]) > MAX_CHUNK:
            raise RemoteProtocolError(f"'d' must be at most {MAX_CHUNK} bytes")
        return ChunkMessage(GroupId(group), obj["h"], obj["d"])
    raise RemoteProtocolError(f"unknown peer message type {kind!r}")


def compact_event(raw: bytes, group: bytes) -> bytes | None:
    """``raw`` without its group element (``evc`` form), or None if it is not of ``group``."""
    if raw[:_HEAD_LEN] != _FULL_HEAD or raw[_HEAD_LEN:_GROUP_END] != group:
        return None
    return _COMPACT_HEAD + raw[_GROUP_END:]


def full_event(compact: bytes, group: bytes) -> bytes:
    """The event ``compact`` (``evc`` form) stands for: ``group`` put back as its second element.

    Only the two head bytes are checked here; the event decoder checks the rest (and that the
    result is canonical), so a compact event has exactly one full form and one id.
    """
    if compact[:2] != _COMPACT_HEAD:
        raise RemoteProtocolError("'evc' entries start with an array of 9 and the format 1")
    return _FULL_HEAD + group + compact[2:]


def _events_map(message: EventsMessage) -> dict[str, object]:
    out: dict[str, object] = {"t": "events", "g": message.group}
    compact = [compact_event(raw, message.group) for raw in message.events]
    if all(c is not None for c in compact):
        out["evc"] = compact
    else:
        out["ev"] = list(message.events)
    copies = ([[i, c] for i, c in message.copies]
              + [[i, c, r] for i, r, c in message.held])
    if copies:
        out["cp"] = copies
    if message.sync:
        out["sync"] = True
    if message.fanout:
        out["fo"] = True
    return out


def _events(obj: dict[object, object], group: bytes) -> tuple[bytes, ...]:
    keys = set(obj)
    if not ({"t", "g"} <= keys <= {"t", "g", "ev", "evc", "cp", "sync", "fo"}) or (
            ("ev" in keys) == ("evc" in keys)):
        raise RemoteProtocolError("peer message keys must be t, g, ev or evc, [cp], [sync], [fo]")
    compact = "evc" in obj
    events = obj["evc" if compact else "ev"]
    if not isinstance(events, list) or len(events) > MAX_EVENTS or not all(
        isinstance(e, bytes) for e in events
    ):
        raise RemoteProtocolError(f"'ev' must be a list of at most {MAX_EVENTS} events")
    if compact:
        return tuple(full_event(e, group) for e in events)
    return tuple(events)


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise RemoteProtocolError(f"{key!r} must be a boolean")
    return value


def _vector(value: object, key: str = "vv") -> tuple[tuple[PeerId, int], ...]:
    if not isinstance(value, list) or len(value) > MAX_VECTOR:
        raise RemoteProtocolError(f"{key!r} must be a list of at most {MAX_VECTOR} entries")
    out: list[tuple[PeerId, int]] = []
    previous = b""
    for item in value:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                or len(item[0]) != 32 or item[0] <= previous or not isinstance(item[1], int)
                or isinstance(item[1], bool) or not 0 < item[1] < 2**40):
            raise RemoteProtocolError(f"{key!r} entries are sorted [author, seq] pairs")
        previous = item[0]
        out.append((PeerId(item[0]), item[1]))
    return tuple(out)


def _is_address(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_LEN


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_LEN


def _keys(obj: dict[object, object], expected: set[str]) -> None:
    if set(obj) != expected:
        raise RemoteProtocolError(f"peer message keys must be {sorted(expected)}")
