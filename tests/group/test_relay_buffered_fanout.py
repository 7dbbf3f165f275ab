"""A flagged event the relay cannot deliver yet (its clock names an event the relay
lacks) is fanned out when the causal buffer lets it out, with its copies: before, it was
stored then but pushed to no one, and members got it only from their periodic sync
(seconds to tens of seconds later: ``kith bench fanout --mode relay`` at N = 32)."""

from __future__ import annotations

import pytest

from node.group import commands as C
from node.group.member_io import Events, Send
from tests.group.relay_cluster import RelayCluster, messages


@pytest.mark.parametrize("mode", ["private", "pairwise"])
def test_a_buffered_flagged_event_is_fanned_out_when_delivered(mode: str) -> None:
    c = RelayCluster(4, mode, seed=11, fanout="relay")
    owner, author, other, relay = c.ids
    c.connect_all()
    c.settle()
    c.do(author, C.SendText("warm up"))
    c.settle()
    # ``other`` speaks while its channel to the relay is down (client-side: owner, author)
    c.disconnect(other, relay)
    c.do(other, C.SendText("first"))
    while c.transfer(other, author):
        pass
    # the author's next event depends on it, and goes flagged to the relay alone
    effects = c.members[author].handle(C.SendText("second"), c.now)
    sends = [e for e in effects if isinstance(e, Send) and isinstance(e.payload, Events)
             and e.payload.fanout]
    assert [s.peer for s in sends] == [relay]
    second = c.run(author, effects)
    assert second is not None
    c.disconnect(author, owner)  # nobody gets "second" but through the relay
    c.disconnect(author, other)
    fanned = c.relay.fanned
    while c.transfer(author, relay):
        pass
    assert c.relay.core.get(second.id) is None  # buffered: the relay lacks "first"
    assert c.relay.fanned == fanned
    c.connect(other, relay)  # "first" reaches the relay by sync: "second" comes out
    c.settle()
    assert c.relay.core.get(second.id) is not None
    assert c.relay.fanned == fanned + 1  # ... and was pushed on
    assert not c.relay.fan_pending and c.relay.fan_pending_bytes == 0
    for peer in (owner, other):
        assert "second" in messages(c, peer)  # readable (pairwise: its copy came along)
