"""The one decode loop for a peer's events (``node.service.incoming``)."""

from __future__ import annotations

import logging

import pytest

from node.crypto.keys import IdentityKey
from node.group import commands as C
from node.logs import RateLimitedLog
from node.service import incoming
from node.service.incoming import decode_events
from node.wire.strict import pack
from tests.group.cluster import Cluster


def test_good_events_pass_in_order_and_junk_costs_one_line_per_reason(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(1, mode="open")
    owner = c.ids[0]
    said = c.do(owner, C.SendText("between the junk"))
    create = c.members[owner].core.ordered()[0]
    sender = IdentityKey(bytes(32)).peer_id
    monkeypatch.setattr(incoming, "peer_log", RateLimitedLog(incoming.log))  # fresh limits
    junk = [b"junk", pack([1] * 10), said.raw + b"\x00", b"more junk"]
    with caplog.at_level(logging.WARNING, logger=incoming.log.name):
        events = decode_events(sender, [create.raw, *junk[:2], said.raw, *junk[2:]])
    assert [e.id for e in events] == [create.id, said.id]
    lines = [r.getMessage() for r in caplog.records if r.name == incoming.log.name]
    assert lines and all(line.startswith("dropping an event from ") for line in lines)
    assert len(lines) < len(junk)  # rate limited per peer and reason, not one per event
