"""``SendBatch``: the sends of a stored batch of inputs, merged per peer (trio driver side).

Theory of operation
-------------------
Group commit (``node.service.driver``) runs the sends of many inputs at once, after
their one transaction. Sent one by one, a burst of 50 messages we authored would be
50 ``events`` messages to each member: 50 records to encrypt, 50 peer messages for
each member to decode and hand its member core, one input each. So the sends are
gathered here first and, per peer, a *run* of consecutive live-fanout ``Events`` of
one group (``kind == "message"``, not ``sync``) becomes one ``events`` message with
all of their events (and pairwise copies) in order, up to ``MAX_EVENTS`` events and
``BATCH_BYTES`` bytes. Nothing is reordered: a run ends at anything else for that
peer (an ack, a vector, a sync batch, another group). A merged payload that every
member gets alike (Sender Keys fanout) is encoded once, as a single payload is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.group.events import Event, GroupId
from node.group.member import Member
from node.group.member_io import Ack, Events, Got, Payload, Vector
from node.group.member_state import BATCH_BYTES
from node.ids import PeerId
from node.wire.messages import (
    MAX_COPIES,
    MAX_EVENTS,
    AckMessage,
    EventsMessage,
    GotMessage,
    TypingMessage,
    VectorMessage,
)


@dataclass(slots=True)
class _Send:
    group: Member
    payload: Payload
    kind: str
    local: bool


#: Hands one encoded message to a peer's channel: (group, peer, data, local, events it
#: carries live) -> None.
Deliver = Callable[[Member, PeerId, bytes, bool, tuple[Event, ...]], None]
Encode = Callable[[Member, Payload], bytes]


class SendBatch:
    """Sends gathered in order, per peer, and sent merged (module docstring)."""

    def __init__(self) -> None:
        self._by_peer: dict[PeerId, list[_Send]] = {}

    def add(self, group: Member, peer: PeerId, payload: Payload, kind: str,
            local: bool) -> None:
        self._by_peer.setdefault(peer, []).append(_Send(group, payload, kind, local))

    def flush(self, encode: Encode, deliver: Deliver) -> None:
        encoded: dict[tuple[int, ...], bytes] = {}
        by_peer, self._by_peer = self._by_peer, {}
        for peer, sends in by_peer.items():
            run: list[_Send] = []
            for send in sends:
                if run and _joins(run, send):
                    run.append(send)
                    continue
                if run:
                    _send_run(peer, run, encoded, encode, deliver)
                run = [send]
            if run:
                _send_run(peer, run, encoded, encode, deliver)


def _live(send: _Send) -> bool:
    return (send.kind == "message" and isinstance(send.payload, Events)
            and not send.payload.sync and not send.payload.fanout)


def _joins(run: list[_Send], send: _Send) -> bool:
    if not (_live(send) and _live(run[0]) and send.group is run[0].group):
        return False
    events = [e for s in run for e in _events(s)] + list(_events(send))
    parts = [s.payload for s in [*run, send] if isinstance(s.payload, Events)]
    copies = sum(len(p.copies) + len(p.held) for p in parts)
    size = sum(len(e.raw) for e in events) + sum(
        len(c) for p in parts for c in [b for _, b in p.copies] + [b for _, _, b in p.held])
    # (a relay's messages carry every recipient's copy: count them too)
    return len(events) <= MAX_EVENTS and copies <= MAX_COPIES and size <= BATCH_BYTES


def _events(send: _Send) -> tuple[Event, ...]:
    assert isinstance(send.payload, Events)
    return send.payload.events


def _send_run(peer: PeerId, run: list[_Send], encoded: dict[tuple[int, ...], bytes],
              encode: Encode, deliver: Deliver) -> None:
    key = tuple(id(s.payload) for s in run)
    payload = run[0].payload
    if len(run) > 1:
        parts = [s.payload for s in run if isinstance(s.payload, Events)]
        payload = Events(tuple(e for p in parts for e in p.events),
                         tuple(c for p in parts for c in p.copies), sync=False,
                         held=tuple(h for p in parts for h in p.held))
    data = encoded.get(key)
    if data is None:
        data = encoded[key] = encode(run[0].group, payload)
    live = payload.events if run[0].kind == "message" and isinstance(payload, Events) else ()
    deliver(run[0].group, peer, data, any(s.local for s in run), live)


def wire_message(group: GroupId, payload: Payload) -> EventsMessage | AckMessage | GotMessage \
        | VectorMessage | TypingMessage:
    """The peer message ``payload`` stands for (``node.wire.messages``)."""
    if isinstance(payload, Events):
        return EventsMessage(group, tuple(e.raw for e in payload.events), payload.copies,
                             sync=payload.sync, held=payload.held, fanout=payload.fanout)
    if isinstance(payload, Ack):
        return AckMessage(group, payload.ids, payload.kind)
    if isinstance(payload, Got):
        return GotMessage(group, payload.upto)
    if isinstance(payload, Vector):
        return VectorMessage(group, payload.vector, payload.want)
    return TypingMessage(group)
