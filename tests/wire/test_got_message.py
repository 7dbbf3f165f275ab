"""The cumulative acknowledgement ``got``: exact shape, strict decoding."""

from __future__ import annotations

import pytest

from node.errors import RemoteProtocolError
from node.ids import GroupId, PeerId
from node.wire.messages import GotMessage, decode_message, encode_message
from node.wire.strict import pack

G = GroupId(b"\x01" * 32)
A, B = PeerId(b"\x02" * 32), PeerId(b"\x03" * 32)


def test_round_trip() -> None:
    message = GotMessage(G, ((A, 1), (B, 2**40 - 1)))
    data = encode_message(message)
    assert data == pack({"t": "got", "g": G, "upto": [[A, 1], [B, 2**40 - 1]]})
    assert decode_message(data) == message


@pytest.mark.parametrize("upto", [
    [[B, 1], [A, 1]],  # not sorted
    [[A, 1], [A, 2]],  # an author twice
    [[A, 0]],  # nothing is not a receipt
    [[A, 2**40]],  # out of range
    [[A[:31], 1]],  # not a peer id
    [[A, True]],  # not an integer
    {"a": 1},  # not a list
])
def test_malformed_upto_is_refused(upto: object) -> None:
    with pytest.raises(RemoteProtocolError, match="upto"):
        decode_message(pack({"t": "got", "g": G, "upto": upto}))


def test_exactly_these_keys() -> None:
    with pytest.raises(RemoteProtocolError, match="keys"):
        decode_message(pack({"t": "got", "g": G, "upto": [], "ids": []}))
