"""Helpers for moving bytes between pure cores (aioquic's ``transfer`` idea)."""

from __future__ import annotations

import itertools

from node.channel.core import NEED_DATA, Channel, Event, Role
from node.crypto.keys import IdentityKey


def drain(channel: Channel) -> list[Event]:
    """All events the channel can produce from what it has received so far."""
    events: list[Event] = []
    while True:
        event = channel.next_event()
        if event is NEED_DATA:
            return events
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)


def feed(channel: Channel, data: bytes, splits: list[int] | None = None) -> list[Event]:
    """Feed ``data`` (cut at ``splits``) and collect every event."""
    events: list[Event] = []
    cuts = sorted({0, len(data), *(s for s in (splits or []) if 0 < s < len(data))})
    for start, end in itertools.pairwise(cuts):
        channel.receive_data(data[start:end])
        events += drain(channel)
    return events


def handshake(
    a_key: IdentityKey, b_key: IdentityKey, **kwargs: object
) -> tuple[Channel, Channel, list[Event], list[Event]]:
    """Run a complete handshake between a fresh initiator and responder."""
    a = Channel(Role.INITIATOR, a_key, name="alice", **kwargs)  # type: ignore[arg-type]
    b = Channel(Role.RESPONDER, b_key, name="bob", **kwargs)  # type: ignore[arg-type]
    b_events = feed(b, a.start())
    a_events = feed(a, b.data_to_send())
    b_events += feed(b, a.data_to_send())
    return a, b, a_events, b_events
