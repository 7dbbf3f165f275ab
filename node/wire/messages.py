"""Application messages between two nodes, inside a channel (pure).

Each channel message is one msgpack map with a type ``t``:

``events``  ``{"t": "events", "g": group, "ev": [event, ...], "cp": [[event id, copy], ...]}``
    Group events (encoded as in ``node.group.events``), oldest first. ``cp``
    carries, for pairwise-mode messages, the receiver's own ciphertext of an
    event (keyed by event id); it is empty otherwise.
``ack``     ``{"t": "ack", "g": group, "ids": [event id, ...]}``
    The sender has stored these events (delivery receipts for their authors).

Strict: exactly these keys, the right types, at most ``MAX_EVENTS`` events or
ids per message; unknown types are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import RemoteProtocolError
from node.group.events import ID_LEN, EventId, GroupId
from node.wire.strict import pack, unpack_strict

MAX_EVENTS = 256
MAX_MESSAGE = 1024 * 1024
MAX_COPY = 128 * 1024


@dataclass(frozen=True, slots=True)
class EventsMessage:
    group: GroupId
    events: tuple[bytes, ...]
    copies: tuple[tuple[EventId, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class AckMessage:
    group: GroupId
    ids: tuple[EventId, ...]


PeerMessage = EventsMessage | AckMessage


def encode_message(message: PeerMessage) -> bytes:
    if isinstance(message, EventsMessage):
        return pack({"t": "events", "g": message.group, "ev": list(message.events),
                     "cp": [[i, c] for i, c in message.copies]})
    return pack({"t": "ack", "g": message.group, "ids": list(message.ids)})


def decode_message(data: bytes) -> PeerMessage:
    obj = unpack_strict(data, max_len=MAX_MESSAGE)
    if not isinstance(obj, dict):
        raise RemoteProtocolError("peer message is not a map")
    kind = obj.get("t")
    group = obj.get("g")
    if not isinstance(group, bytes) or len(group) != 32:
        raise RemoteProtocolError("peer message: 'g' must be a 32-byte group id")
    if kind == "events":
        _keys(obj, {"t", "g", "ev", "cp"})
        events = obj["ev"]
        if not isinstance(events, list) or len(events) > MAX_EVENTS or not all(
            isinstance(e, bytes) for e in events
        ):
            raise RemoteProtocolError(f"'ev' must be a list of at most {MAX_EVENTS} events")
        copies = obj["cp"]
        if not isinstance(copies, list) or len(copies) > MAX_EVENTS:
            raise RemoteProtocolError("'cp' must be a list")
        out = []
        for item in copies:
            if (not isinstance(item, list) or len(item) != 2 or not _is_id(item[0])
                    or not isinstance(item[1], bytes) or len(item[1]) > MAX_COPY):
                raise RemoteProtocolError("'cp' entries are [event id, ciphertext]")
            out.append((EventId(item[0]), item[1]))
        return EventsMessage(GroupId(group), tuple(events), tuple(out))
    if kind == "ack":
        _keys(obj, {"t", "g", "ids"})
        ids = obj["ids"]
        if not isinstance(ids, list) or len(ids) > MAX_EVENTS or not all(_is_id(i) for i in ids):
            raise RemoteProtocolError(f"'ids' must be a list of at most {MAX_EVENTS} event ids")
        return AckMessage(GroupId(group), tuple(EventId(i) for i in ids))
    raise RemoteProtocolError(f"unknown peer message type {kind!r}")


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_LEN


def _keys(obj: dict[object, object], expected: set[str]) -> None:
    if set(obj) != expected:
        raise RemoteProtocolError(f"peer message keys must be {sorted(expected)}")
