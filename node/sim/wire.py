"""What simulated members send each other, and its exact size on a real wire.

A payload is the member core's decoded form of a real peer message
(``node.group.member_io``, standing for ``node.wire.messages``):
events travel as ``Event`` objects so that receivers skip re-parsing bytes
(a thousand members would otherwise spend most of the run in msgpack), but
every payload is sized by encoding the real message it stands for, so byte
counts are exactly what a node would queue for that member.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.group.events import GroupId
from node.group.member_io import Ack, Events, Got, Typing, Vector
from node.wire.messages import (
    AckMessage,
    EventsMessage,
    GotMessage,
    TypingMessage,
    VectorMessage,
    encode_message,
)


@dataclass(frozen=True, slots=True)
class Frame:
    """raw mode: message ``index`` as a length-prefixed frame of ``size`` bytes."""

    index: int


Payload = Events | Ack | Got | Vector | Typing | Frame

#: raw mode's frame header (a 4-byte length, as in the fanout benchmark).
FRAME_HEADER = 4


def size_of(group: GroupId, payload: Payload, frame_size: int = 0) -> int:
    """Bytes of the real message ``payload`` stands for."""
    if isinstance(payload, Events):
        message = EventsMessage(group, tuple(e.raw for e in payload.events), payload.copies,
                                payload.sync, payload.held, payload.fanout)
        return len(encode_message(message))
    if isinstance(payload, Ack):
        return len(encode_message(AckMessage(group, payload.ids, payload.kind)))
    if isinstance(payload, Got):
        return len(encode_message(GotMessage(group, payload.upto)))
    if isinstance(payload, Vector):
        return len(encode_message(VectorMessage(group, payload.vector, payload.want)))
    if isinstance(payload, Typing):
        return len(encode_message(TypingMessage(group)))
    return FRAME_HEADER + frame_size
