"""Attachment chunk messages: round trips and strict limits."""

from __future__ import annotations

import pytest

from node.errors import RemoteProtocolError
from node.files.attachment import MAX_CHUNK
from node.group.events import GroupId
from node.wire.messages import (
    MAX_WANT,
    ChunkMessage,
    NoChunkMessage,
    WantMessage,
    decode_message,
    encode_message,
)
from node.wire.strict import pack

G = GroupId(b"g" * 32)
H = b"h" * 32


@pytest.mark.parametrize("message", [
    WantMessage(G, (H, b"i" * 32)),
    NoChunkMessage(G, (H,)),
    ChunkMessage(G, H, b"x" * MAX_CHUNK),
    ChunkMessage(G, H, b""),
])
def test_round_trip(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("obj, why", [
    ({"t": "want", "g": G, "h": []}, "chunk addresses"),
    ({"t": "want", "g": G, "h": [H] * (MAX_WANT + 1)}, "chunk addresses"),
    ({"t": "want", "g": G, "h": [b"short"]}, "chunk addresses"),
    ({"t": "nochunk", "g": G, "h": "nope"}, "chunk addresses"),
    ({"t": "want", "g": G, "h": [H], "x": 1}, "keys"),
    ({"t": "chunk", "g": G, "h": H, "d": b"x" * (MAX_CHUNK + 1)}, "at most"),
    ({"t": "chunk", "g": G, "h": b"x", "d": b""}, "chunk address"),
    ({"t": "chunk", "g": G, "h": H, "d": "text"}, "at most"),
    ({"t": "chunk", "g": G, "h": H}, "keys"),
])
def test_malformed_chunk_messages_are_refused(obj: dict[str, object], why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode_message(pack(obj))
