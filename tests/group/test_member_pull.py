"""Sync without redundancy (issue 13, item 4): a member that lacks something pulls it
from one member at a time, moves on when that member goes silent or away, and nothing
is streamed for an unchanged vector or for live pushes still in flight."""

from __future__ import annotations

from node.group import commands as C
from node.group.member_io import (
    Announce,
    Effect,
    Events,
    PeerDown,
    PeerUp,
    Received,
    Send,
    SendMany,
    Tick,
    Vector,
)
from node.group.member_state import ACK_TIMEOUT, RESYNC_AFTER
from node.group.pulling import ASK_TIMEOUT
from node.ids import PeerId
from tests.group.cluster import Cluster
from tests.group.test_member_bad_input import scene


def asks(effects: list[Effect]) -> list[PeerId]:
    """Whom these effects send a ``want`` to."""
    return [e.peer for e in effects if isinstance(e, Send) and isinstance(e.payload, Vector)
            and e.payload.want]


def sent(effects: list[Effect]) -> list[tuple[PeerId, object]]:
    out: list[tuple[PeerId, object]] = []
    for e in effects:
        if isinstance(e, Send):
            out.append((e.peer, e.payload))
        elif isinstance(e, SendMany):
            out += [(p, e.payload) for p in e.peers]
    return out


def record(c: Cluster) -> list[tuple[PeerId, PeerId, object]]:
    """Log every message the cluster delivers from now on: (from, to, payload)."""
    log: list[tuple[PeerId, PeerId, object]] = []
    transfer = c.transfer

    def logged(src: PeerId, dst: PeerId) -> bool:
        queue = c.flight.get((src, dst))
        if queue:
            log.append((src, dst, queue[0]))
        return transfer(src, dst)

    c.transfer = logged  # type: ignore[method-assign]
    return log


def lagging() -> tuple[Cluster, list[PeerId], PeerId]:
    """Five members; the last was cut off while the first sent 4 messages."""
    c = Cluster(5)
    owner, *others = c.ids
    for peer in others:
        c.do(owner, C.AddMember(peer))
    c.connect_all()
    c.settle()
    late = c.ids[-1]
    c.partition(c.ids[:-1], [late])
    for i in range(4):
        c.do(owner, C.SendText(f"while away {i}"))
    c.settle()
    return c, c.ids[:-1], late


def test_a_lagging_member_is_streamed_what_it_lacks_by_one_member() -> None:
    c, holders, late = lagging()
    lacked = {e.id for e in c.members[holders[0]].core.ordered()} - {
        e.id for e in c.members[late].core.ordered()}
    assert len(lacked) >= 4  # the messages (and the sender key they need)
    log = record(c)
    c.connect_all()
    c.settle()
    assert c.order(late) == c.order(holders[0])
    streams = [(src, p) for src, dst, p in log
               if dst == late and isinstance(p, Events) and p.sync]
    assert len({src for src, _ in streams}) == 1  # one member streamed, not four
    ids = [e.id for _, p in streams for e in p.events]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) and set(ids) == lacked  # each event it lacked, once
    wants = [(src, dst) for src, dst, p in log if isinstance(p, Vector) and p.want]
    assert wants == [(late, streams[0][0])]
    assert streams[0][0] in holders


def _liar_scene() -> tuple[Cluster, PeerId, PeerId, PeerId]:
    """bob lags behind alice; mallory (a member) will claim to hold everything."""
    c, alice, bob, mallory = scene()
    c.partition([alice, mallory], [bob])
    for i in range(3):
        c.do(alice, C.SendText(f"news {i}"))
    c.settle()
    member = c.members[bob]
    member.handle(PeerUp(alice), c.now)
    member.handle(PeerUp(mallory), c.now)
    c.members[alice].handle(PeerUp(bob), c.now)  # (what it sends is not delivered)
    return c, alice, bob, mallory


def test_a_member_that_claims_everything_and_sends_nothing_is_passed_over() -> None:
    c, alice, bob, mallory = _liar_scene()
    member = c.members[bob]
    everything = tuple(sorted((p, 10**6) for p in c.ids))
    assert asks(member.handle(Received(mallory, Vector(everything, False)), c.now)) == [mallory]
    real = c.members[alice].vector()
    # alice holds what bob lacks too, but a request is under way: nobody else is asked
    assert asks(member.handle(Received(alice, Vector(real, False)), c.now)) == []
    assert asks(member.handle(Tick(), c.now + ASK_TIMEOUT / 2)) == []
    # mallory stays silent: bob asks alice, and does not go back to mallory soon
    c.now += ASK_TIMEOUT
    effects = member.handle(Tick(), c.now)
    assert asks(effects) == [alice]
    answer = c.members[alice].handle(Received(bob, Vector(member.vector(), True)), c.now)
    batches = [p for to, p in sent(answer) if to == bob and isinstance(p, Events)]
    assert batches
    for batch in batches:
        member.handle(Received(alice, batch), c.now)
    assert member.core.frontier == c.members[alice].core.frontier
    assert asks(member.handle(Announce(), c.now + 1)) == []  # mallory: passed over


def test_a_closed_channel_moves_the_request_on() -> None:
    c, alice, bob, mallory = _liar_scene()
    member = c.members[bob]
    everything = tuple(sorted((p, 10**6) for p in c.ids))
    member.handle(Received(alice, Vector(c.members[alice].vector(), False)), c.now)
    assert member.asking is not None and member.asking.peer == alice
    member.handle(Received(mallory, Vector(everything, False)), c.now)
    assert asks(member.handle(PeerDown(alice), c.now)) == [mallory]


def test_a_stream_that_ends_short_is_not_asked_for_again() -> None:
    c, alice, bob, _mallory = _liar_scene()
    member = c.members[bob]
    claimed = tuple(sorted((p, n + 5) for p, n in c.members[alice].vector()))
    assert asks(member.handle(Received(alice, Vector(claimed, False)), c.now)) == [alice]
    # alice's stream ends (her vector, want false) short of what she claimed
    member.handle(Received(alice, Vector(claimed, False)), c.now)
    assert member.asking is None
    assert asks(member.handle(Announce(), c.now)) == []  # same vectors: not again
    more = tuple(sorted((p, n + 6) for p, n in c.members[alice].vector()))
    assert asks(member.handle(Received(alice, Vector(more, False)), c.now)) == [alice]


def test_an_unchanged_vector_starts_nothing() -> None:
    c, _alice, _bob, _mallory = scene()
    for peer in c.ids:  # one periodic exchange: everyone learns what the others hold
        c.handle(peer, Announce())
    c.settle()
    for peer in c.ids:  # the next one sends nothing at all
        assert sent(c.members[peer].handle(Announce(), c.now + 30)) == []
    # and a peer's unchanged vector, again, streams nothing
    alice, bob = c.ids[0], c.ids[1]
    effects = c.members[alice].handle(Received(bob, Vector(c.members[bob].vector(), False)),
                                      c.now + 31)
    assert [p for _, p in sent(effects) if isinstance(p, Events)] == []


def test_live_pushes_in_flight_are_not_streamed_again() -> None:
    c, alice, bob, _mallory = scene()
    before = c.members[bob].vector()
    live = c.do(alice, C.SendText("just now"))  # fanned out to bob, still in flight
    asked = c.members[alice].handle(Received(bob, Vector(before, True)), c.now + 1)
    streamed = [e.id for _, p in sent(asked) if isinstance(p, Events) for e in p.events]
    assert live.id not in streamed
    # not acknowledged long after (the push was lost): the next request streams it
    later = c.now + ACK_TIMEOUT + RESYNC_AFTER
    asked = c.members[alice].handle(Received(bob, Vector(before, True)), later)
    streamed = [e.id for _, p in sent(asked) if isinstance(p, Events) for e in p.events]
    assert live.id in streamed


def test_a_restarted_member_asks_again_for_the_copy_only_the_author_holds() -> None:
    """A pairwise message relayed without carol's copy; carol restarts (forgetting what
    she could not read) before meeting bob: on meeting him she reports it again, and his
    copy comes (his outbox no longer pushes it: she holds the event)."""
    c = Cluster(3, mode="pairwise")
    alice, bob, carol = c.ids
    c.do(alice, C.AddMember(bob))
    c.do(alice, C.AddMember(carol))
    c.connect_all()
    c.settle()
    c.disconnect(bob, carol)
    said = c.do(bob, C.SendText("for each of you"))
    c.settle()
    for p in (alice, carol):
        c.handle(p, Announce())
    c.settle()
    assert c.members[carol].texts.get(said.id) is None  # relayed without her copy
    c.restart(carol)
    c.connect_all()
    c.settle()
    assert c.members[carol].texts[said.id] == "for each of you"


def test_a_live_event_reaches_a_member_its_author_had_not_seen_added() -> None:
    """carol writes before she learns that alice added dave (so her fanout leaves dave
    out, and carol has no channel to him): alice, who delivers it live, tells dave, who
    pulls it at once (not at the next periodic exchange)."""
    c = Cluster(4)
    alice, bob, carol, dave = c.ids
    for peer in (bob, carol):
        c.do(alice, C.AddMember(peer))
    c.connect_all([alice, bob, carol])
    c.settle()
    c.connect(alice, dave)
    c.do(alice, C.AddMember(dave))  # in flight to carol while she writes
    # alice and dave settle between them (she learns his vector), carol hears nothing yet
    for _ in range(3):
        while c.transfer(alice, dave) or c.transfer(dave, alice):
            pass
        c.now += 1
        c.handle(dave, Tick())
        c.handle(alice, Tick())
    assert c.members[alice].known(dave) is not None
    said = c.do(carol, C.SendText("before I knew"))
    c.settle()
    assert said.id in {e.id for e in c.members[dave].core.ordered()}
    assert c.now < 1000.0 + 30  # not by the periodic exchange (there is none here)
