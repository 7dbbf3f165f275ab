"""A flagged event the relay cannot deliver yet (its clock names an event the relay
lacks) is fanned out when the causal buffer lets it out, with its copies: before, it was
stored then but pushed to no one, and members got it only from their periodic sync
(seconds to tens of seconds later: ``kith bench fanout --mode relay`` at N = 32).
Likewise a flagged event the relay got just before by sync (a member pulled it from the
author and streamed it on): before, the flagged copy was a duplicate, never fanned out,
and the members it was for waited ``RELAY_WAIT`` to pull it elsewhere."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from node.group import commands as C
from node.group.events import EventId
from node.group.member_io import Events, Received, Send, SendMany
from node.group.relaying import LATE_FAN_MAX, LATE_FAN_WINDOW
from tests.group.relay_cluster import RelayCluster, messages


def _warm(mode: str, seed: int) -> RelayCluster:
    """Owner, author, other and their relay, connected, after the author's first message
    (a private group's first message rotates)."""
    c = RelayCluster(4, mode, seed=seed, fanout="relay")
    c.connect_all()
    c.settle()
    c.do(c.ids[1], C.SendText("warm up"))
    c.settle()
    return c


@pytest.mark.parametrize("mode", ["private", "pairwise"])
def test_a_buffered_flagged_event_is_fanned_out_when_delivered(mode: str) -> None:
    c = _warm(mode, seed=11)
    owner, author, other, relay = c.ids
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


@pytest.mark.parametrize("mode", ["private", "pairwise"])
@pytest.mark.parametrize("delay", [0.5, LATE_FAN_WINDOW + 1])
def test_a_flagged_event_the_relay_got_first_by_sync_is_still_fanned_out(
        mode: str, delay: float) -> None:
    c = _warm(mode, seed=12)
    owner, author, other, relay = c.ids
    effects = c.members[author].handle(C.SendText("late"), c.now)
    flagged = [e for e in effects if isinstance(e, Send) and isinstance(e.payload, Events)
               and e.payload.fanout]
    assert [s.peer for s in flagged] == [relay]
    event = flagged[0].payload.events[0]
    # ``other`` pulled it from the author and streams it to the relay first
    c.relay.handle(Received(other, Events((event,), sync=True)), c.now)
    assert c.relay.core.get(event.id) is not None
    fanned = c.relay.fanned
    c.now += delay
    out = c.relay.handle(Received(author, flagged[0].payload), c.now)
    pushed = {p for e in out if isinstance(e, Send | SendMany) and isinstance(e.payload, Events)
              and event in e.payload.events and not e.payload.sync
              for p in (e.peers if isinstance(e, SendMany) else (e.peer,))}
    if delay < LATE_FAN_WINDOW:  # pushed on to the members but its author
        assert pushed == {owner, other}
        assert c.relay.fanned == fanned + 1
        assert not c.relay.unfanned
        c.run(relay, out)
        c.disconnect(author, owner)  # owner can have it from the relay alone
        c.disconnect(other, owner)
        while c.transfer(relay, owner):
            pass
        assert messages(c, owner)[-1] == "late"  # readable: its copy came along
    else:  # too late to be worth a push: the members have it by sync by now
        assert pushed == set() and c.relay.fanned == fanned


def test_the_events_remembered_for_a_late_fanout_are_bounded() -> None:
    c = RelayCluster(3, seed=13, fanout="client")
    relay = c.relay
    events = [SimpleNamespace(id=EventId(i.to_bytes(32, "big"))) for i in range(3 * LATE_FAN_MAX)]
    relay.now = 100.0
    for k in range(0, len(events), 7):  # a busy client-side group: every event unflagged
        relay.remember_unfanned(events[k:k + 7])  # type: ignore[arg-type]
    assert len(relay.unfanned) == LATE_FAN_MAX
    assert next(iter(relay.unfanned)) == events[-LATE_FAN_MAX].id  # the newest kept
    relay.now += LATE_FAN_WINDOW
    relay.remember_unfanned(events[:1])  # type: ignore[arg-type]
    assert list(relay.unfanned) == [events[0].id]  # the rest too old to be worth a push
