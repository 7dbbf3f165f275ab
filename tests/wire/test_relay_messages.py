"""The ``events`` message's relay fields: ``fo`` (fan out) and up to ``MAX_COPIES``
copies addressed by recipient (docs/protocol.md sections 14 and 18)."""

from __future__ import annotations

import pytest

from node.errors import RemoteProtocolError
from node.ids import EventId, GroupId, PeerId
from node.wire.messages import (
    MAX_COPIES,
    EventsMessage,
    decode_message,
    encode_message,
)
from node.wire.strict import pack

GROUP = GroupId(b"\x01" * 32)


def test_fanout_flag_round_trips_and_is_left_out_when_false() -> None:
    held = tuple((EventId(bytes([k]) * 32), PeerId(bytes([k, 1]) * 16), b"c") for k in range(3))
    flagged = EventsMessage(GROUP, (), held=held, fanout=True)
    assert decode_message(encode_message(flagged)) == flagged
    plain = EventsMessage(GROUP, ())
    assert b"fo" not in encode_message(plain)
    assert decode_message(encode_message(plain)).fanout is False


def test_fanout_flag_must_be_a_boolean() -> None:
    with pytest.raises(RemoteProtocolError, match="'fo' must be a boolean"):
        decode_message(pack({"t": "events", "g": GROUP, "evc": [], "fo": 1}))


def test_copies_up_to_the_cap() -> None:
    entry = [b"\x02" * 32, b"c", b"\x03" * 32]
    decoded = decode_message(pack({"t": "events", "g": GROUP, "evc": [],
                                   "cp": [entry] * MAX_COPIES}))
    assert isinstance(decoded, EventsMessage) and len(decoded.held) == MAX_COPIES
    with pytest.raises(RemoteProtocolError, match="'cp'"):
        decode_message(pack({"t": "events", "g": GROUP, "evc": [],
                             "cp": [entry] * (MAX_COPIES + 1)}))
