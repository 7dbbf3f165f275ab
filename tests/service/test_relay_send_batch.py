"""Live messages to one peer are merged (``node.service.send_batch``), but never past the
wire's bounds when they carry every recipient's copy (what a relay of a pairwise group
is sent): at most ``MAX_COPIES`` copies and ``BATCH_BYTES`` bytes in one message."""

from __future__ import annotations

from typing import Any

from node.crypto.keys import IdentityKey
from node.group.bodies import Rename
from node.group.events import EventId
from node.group.member_io import Events, Payload
from node.group.member_state import BATCH_BYTES
from node.ids import PeerId
from node.service.send_batch import SendBatch
from node.testing.groups import Replica
from node.wire.messages import MAX_COPIES

RELAY = PeerId(b"\x09" * 32)


def test_merged_live_messages_stay_within_the_copy_and_byte_bounds() -> None:
    replica, _ = Replica.founding(IdentityKey(bytes(32)))
    events = [replica.author(Rename(f"n{k}")) for k in range(40)]
    recipients = [PeerId(bytes([k % 256, k // 256]) + b"\x01" * 30) for k in range(400)]
    group: Any = object()
    batch = SendBatch()
    for event in events:  # 40 live messages, each with 400 copies of 100 bytes
        held = tuple((EventId(event.id), r, b"\x05" * 100) for r in recipients)
        batch.add(group, RELAY, Events((event,), held=held), "message", False)
    sent: list[Payload] = []
    batch.flush(lambda g, payload: (sent.append(payload), b"x")[1],
                lambda g, peer, data, local, live: None)
    assert sum(len(p.events) for p in sent if isinstance(p, Events)) == 40
    assert len(sent) > 1  # merged, but split
    for payload in sent:
        assert isinstance(payload, Events)
        assert len(payload.held) <= MAX_COPIES
        assert sum(len(b) for _, _, b in payload.held) <= BATCH_BYTES
