from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import RemoteProtocolError
from node.group.events import EventId, GroupId
from node.ids import PeerId
from node.wire.messages import (
    MAX_EVENTS,
    AckMessage,
    EventsMessage,
    VectorMessage,
    decode_message,
    encode_message,
)
from node.wire.strict import unpack_strict

G = GroupId(bytes(32))
ids = st.binary(min_size=32, max_size=32).map(EventId)


@given(
    events=st.lists(st.binary(max_size=100), max_size=10),
    copies=st.lists(st.tuples(ids, st.binary(max_size=100)), max_size=5),
    sync=st.booleans(),
)
def test_events_round_trip(
    events: list[bytes], copies: list[tuple[EventId, bytes]], sync: bool
) -> None:
    m = EventsMessage(G, tuple(events), tuple(copies), sync)
    assert decode_message(encode_message(m)) == m


@given(st.lists(ids, max_size=MAX_EVENTS), st.sampled_from(["ack", "unread", "readable"]))
def test_ack_round_trip(event_ids: list[EventId], kind: str) -> None:
    m = AckMessage(G, tuple(event_ids), kind)
    data = encode_message(m)
    assert decode_message(data) == m
    assert unpack_strict(data, max_len=len(data))["t"] == kind  # the wire type


@given(st.dictionaries(st.binary(min_size=32, max_size=32), st.integers(1, 2**40 - 1)),
       st.booleans())
def test_vector_round_trip(entries: dict[bytes, int], want: bool) -> None:
    m = VectorMessage(G, tuple(sorted((PeerId(a), n) for a, n in entries.items())), want)
    assert decode_message(encode_message(m)) == m


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "not a map"),
        ({"t": "events", "g": b"x", "ev": [], "cp": [], "sync": False}, "32-byte group"),
        ({"t": "nope", "g": bytes(32)}, "unknown peer message type"),
        ({"t": "events", "g": bytes(32), "ev": [], "evc": []}, "keys must be"),
        ({"t": "events", "g": bytes(32)}, "keys must be"),
        ({"t": "events", "g": bytes(32), "evc": [b"\x9a\x01"]}, "'evc' entries"),
        ({"t": "events", "g": bytes(32), "ev": [], "cp": [], "sync": False, "x": 1},
         "keys must be"),
        ({"t": "events", "g": bytes(32), "ev": ["str"], "cp": [], "sync": False},
         "list of at most"),
        ({"t": "events", "g": bytes(32), "ev": [b""] * (MAX_EVENTS + 1), "cp": [],
          "sync": False}, "at most"),
        ({"t": "events", "g": bytes(32), "ev": [], "cp": [[b"short", b""]], "sync": False},
         "'cp' entries"),
        ({"t": "events", "g": bytes(32), "ev": [], "cp": [], "sync": 0}, "'sync' must be"),
        ({"t": "ack", "g": bytes(32), "ids": [b"short"]}, "event ids"),
        ({"t": "vv", "g": bytes(32), "vv": [], "want": 1}, "boolean"),
        ({"t": "vv", "g": bytes(32), "vv": [[bytes(32), 0]], "want": True}, "sorted"),
        ({"t": "vv", "g": bytes(32), "vv": [[b"\x01" * 32, 1], [bytes(32), 1]], "want": True},
         "sorted"),
    ],
)
def test_malformed(obj: object, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_message(msgpack.packb(obj))


def test_garbage() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(b"\xc1\xc1")


def test_typing_round_trip_and_strict_keys() -> None:
    from node.wire.messages import TypingMessage

    message = TypingMessage(GroupId(b"\x03" * 32))
    assert decode_message(encode_message(message)) == message
    with pytest.raises(RemoteProtocolError, match="keys"):
        decode_message(msgpack.packb({"t": "typing", "g": b"\x03" * 32, "x": 1}, use_bin_type=True))


def test_events_travel_without_their_group_and_come_back_whole() -> None:
    from node.group.events import Kind, UnsignedEvent, decode_event

    group = GroupId(b"\x07" * 32)
    events = tuple(
        UnsignedEvent(group, PeerId(b"\x01" * 32), seq, 0, (), seq, Kind.LEAVE, b"\x80")
        .signed(b"\x02" * 64) for seq in (1, 2)
    )
    m = EventsMessage(group, tuple(e.raw for e in events))
    data = encode_message(m)
    wire = unpack_strict(data, max_len=len(data))
    assert set(wire) == {"t", "g", "evc"}  # no empty cp, no false sync
    assert all(bytes(group) not in c for c in wire["evc"])
    # 34 bytes (a bin8 of 32) less per event; the key "evc" is one byte longer than "ev"
    assert len(data) == len(encode_message(EventsMessage(G, m.events))) - 2 * 34 + 1
    back = decode_message(data)
    assert back == m
    assert [decode_event(r).id for r in back.events] == [e.id for e in events]


def test_events_of_another_group_travel_whole() -> None:
    # An event whose group is not the message's cannot be compacted; the full form keeps it
    # as it is (the receiver rejects it later, as it always did).
    m = EventsMessage(G, (b"\x9a\x01\xc4\x20" + b"\x05" * 32 + b"rest",), sync=True)
    data = encode_message(m)
    assert "ev" in unpack_strict(data, max_len=len(data))
    assert decode_message(data) == m
