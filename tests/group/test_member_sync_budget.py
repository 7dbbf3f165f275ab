"""What a version vector may cost a member (issue 12, item 7): sync answers a peer only
with what it lacks, at most once per change of its vector, within a per-peer byte budget.

Alice holds a history; mallory (a member) sends vectors, empty and repeated, to draw it
out again and again. Every test counts the bytes of events alice's effects send mallory.
"""

from __future__ import annotations

from node.group import commands as C
from node.group.member_io import (
    Ack,
    Effect,
    Events,
    PeerDown,
    PeerUp,
    Received,
    Send,
    Tick,
    Vector,
    Wake,
)
from node.group.member_state import RESYNC_AFTER, SYNC_BURST, SYNC_RATE
from node.ids import PeerId
from tests.group.cluster import Cluster
from tests.group.test_member_bad_input import scene


def streamed(effects: list[Effect], peer: PeerId) -> list[Events]:
    return [e.payload for e in effects
            if isinstance(e, Send) and e.peer == peer and isinstance(e.payload, Events)]


def nbytes(messages: list[Events]) -> int:
    return sum(len(ev.raw) for m in messages for ev in m.events)


def vector(c: Cluster, to: PeerId, sender: PeerId, entries: tuple[tuple[PeerId, int], ...] = (),
           want: bool = True) -> list[Effect]:
    return c.members[to].handle(Received(sender, Vector(entries, want)), c.now)


def history(c: Cluster, alice: PeerId, n: int, size: int = 2000) -> None:
    for i in range(n):
        c.do(alice, C.SendText(f"{i:05d}" + "x" * size))
    c.settle()


def test_a_repeated_vector_costs_nothing() -> None:
    c, alice, _bob, mallory = scene()
    history(c, alice, 20)
    first = streamed(vector(c, alice, mallory), mallory)
    assert first and nbytes(first) > 40_000  # the first empty vector: she lacks everything
    # the same vector, again and again, while the session is under way or after it
    for _ in range(40):
        assert streamed(vector(c, alice, mallory), mallory) == []
    # acking the batch goes on with the session (it is not restarted)
    last = first[-1].events[-1].id
    rest = c.members[alice].handle(Received(mallory, Ack((last,))), c.now)
    sent_after_ack = nbytes(streamed(rest, mallory))
    assert nbytes(first) + sent_after_ack <= nbytes(first) + 60_000


def test_a_different_vector_does_not_restart_a_session_under_way() -> None:
    c, alice, _bob, mallory = scene()
    history(c, alice, 300)  # more than one batch (512 KiB)
    first = streamed(vector(c, alice, mallory), mallory)
    assert len(first) == 1
    # alternating vectors used to restart the session each time, streaming 512 KiB anew
    for i in range(40):
        entries = ((alice, 1),) if i % 2 else ()
        assert streamed(vector(c, alice, mallory, entries), mallory) == []


def test_the_same_vector_is_answered_again_when_we_hold_more_or_later() -> None:
    c, alice, _bob, mallory = scene()
    history(c, alice, 3)
    member = c.members[alice]
    assert streamed(vector(c, alice, mallory), mallory)
    member.sessions.clear()  # (as if the session ended without an ack)
    assert streamed(vector(c, alice, mallory), mallory) == []
    c.do(alice, C.SendText("something new"))
    assert streamed(vector(c, alice, mallory), mallory)  # we hold more: answered
    member.sessions.clear()
    c.now += RESYNC_AFTER
    assert streamed(vector(c, alice, mallory), mallory)  # long enough ago: answered


def test_a_peer_that_reconnects_is_answered_at_once() -> None:
    c, alice, _bob, mallory = scene()
    history(c, alice, 3)
    assert streamed(vector(c, alice, mallory), mallory)
    c.members[alice].handle(PeerDown(mallory), c.now)
    c.members[alice].handle(PeerUp(mallory), c.now)
    assert streamed(vector(c, alice, mallory), mallory)


def test_requests_for_our_vector_are_answered_once_per_change() -> None:
    c, alice, _bob, mallory = scene()

    def vectors(effects: list[Effect], want: bool) -> int:
        return sum(1 for e in effects if isinstance(e, Send) and isinstance(e.payload, Vector)
                   and e.payload.want is want)

    # mallory claims to hold more than alice and asks: alice has nothing for it (her
    # vector says so, once) and asks mallory in turn (once: one request at a time)
    ahead = tuple((p, 10**6) for p in c.ids)
    first = vector(c, alice, mallory, ahead)
    assert vectors(first, want=False) == 1 and vectors(first, want=True) == 1
    again = [vector(c, alice, mallory, ahead) for _ in range(50)]
    assert sum(vectors(e, False) + vectors(e, True) for e in again) == 0
    more = tuple((p, 10**6 + 1) for p in c.ids)
    other = vector(c, alice, mallory, more)  # a different vector: answered once more
    assert vectors(other, want=False) == 1 and vectors(other, want=True) == 0


def test_sync_spends_a_byte_budget_per_peer_and_resumes_on_a_tick() -> None:
    c, alice, _bob, mallory = scene()
    history(c, alice, 4, size=60_000)  # about 240 kB of events
    member = c.members[alice]
    total = 0
    wakes: list[float] = []
    start = c.now
    # mallory pulls the whole history again and again, acking each batch at once
    for _round in range(25):
        c.members[alice].handle(PeerDown(mallory), c.now)  # a fresh session every time
        c.members[alice].handle(PeerUp(mallory), c.now)
        effects = vector(c, alice, mallory)
        while True:
            sent = streamed(effects, mallory)
            total += nbytes(sent)
            wakes += [e.at for e in effects if isinstance(e, Wake)]
            if not sent:
                break
            effects = member.handle(Received(mallory, Ack((sent[-1].events[-1].id,))), c.now)
    # with no time passing, she got the burst and no more
    assert SYNC_BURST - 300_000 <= total <= SYNC_BURST
    assert mallory in member.sessions and member.sessions[mallory].resume_at is not None
    # once time passes, the paused session goes on by itself
    c.now = max(wakes)
    resumed = streamed(member.handle(Tick(), c.now), mallory)
    assert resumed
    assert (c.now - start) * SYNC_RATE + SYNC_BURST >= total + nbytes(resumed)
