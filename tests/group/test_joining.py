"""Joining an open group without sockets: a joiner's ``Joining`` and members' cores.

The member's answer (``answer_open``, then the member core's ``HistoryWanted``)
and the joiner's attempt are wired by hand as ``tests.group.cluster`` wires
members; every refusal and failure is asserted as a returned effect with its
reason.
"""

from __future__ import annotations

import pytest

from node.errors import LocalProtocolError
from node.group import commands as C
from node.group import joining as J
from node.group.bodies import Approve, Join, Unban
from node.group.events import Event
from node.group.joining import (
    Adopt,
    AskOpen,
    HistoryArrived,
    JoinEffect,
    JoinFailed,
    Joining,
    Phase,
    RefusalArrived,
    RefuseOpen,
    TimedOut,
    VectorArrived,
    answer_open,
)
from node.group.member_io import Events, HistoryWanted, Received, Vector, Warn
from node.ids import PeerId
from node.wire.messages import MAX_EVENTS
from tests.group.cluster import Cluster


def lobby(n: int = 3, policy: str = "blacklist") -> Cluster:
    """An open group of the first n-1 peers (the last one is the joiner), with talk."""
    c = Cluster(n, mode="open", policy=policy)
    for peer in c.ids[1:-1]:
        c.do(c.ids[0], C.AddMember(peer))
    c.connect_all(c.ids[:-1])
    c.settle()
    for i, peer in enumerate(c.ids[:-1]):
        c.do(peer, C.SendText(f"hello from {i}"))
    c.settle()
    return c


def answer(c: Cluster, via: PeerId, joiner: PeerId) -> list[Events | Vector] | RefuseOpen:
    """What member ``via`` answers the joiner's ``open``: its payloads, in order."""
    decision = answer_open(c.group, c.members[via], joiner)
    if isinstance(decision, RefuseOpen):
        return decision
    assert decision == HistoryWanted(joiner)
    c.connect(via, joiner)
    c.handle(via, decision)
    sent = list(c.flight.pop((via, joiner), []))
    assert all(isinstance(p, Events | Vector) for p in sent)
    return [p for p in sent if isinstance(p, Events | Vector)]


def feed(joining: Joining, via: PeerId, payloads: list[Events | Vector]) -> list[JoinEffect]:
    out: list[JoinEffect] = []
    for payload in payloads:
        if isinstance(payload, Events):
            out += joining.handle(HistoryArrived(via, payload.events))
        else:
            out += joining.handle(VectorArrived(via, payload.vector))
    return out


def attempt(c: Cluster, via: PeerId, known: list[Event] | None = None,
            ) -> tuple[Joining, list[JoinEffect]]:
    joiner = c.ids[-1]
    joining = Joining(joiner, c.group, via, "zoe", known or [])
    assert joining.start() == [AskOpen(via, c.group)]
    reply = answer(c, via, joiner)
    if isinstance(reply, RefuseOpen):
        return joining, joining.handle(RefusalArrived(via, reply.reason))
    return joining, feed(joining, via, reply)


def adopt(c: Cluster, effect: Adopt) -> Event:
    """Run ``Adopt`` as the driver does: deliver the events, then author the JOIN."""
    joiner = c.ids[-1]
    c.handle(joiner, Received(effect.peer, Events(effect.events, sync=True)))
    return c.do(joiner, C.AuthorBody(effect.join))


def failure(effects: list[JoinEffect]) -> str:
    [failed] = [e for e in effects if isinstance(e, JoinFailed)]
    assert not any(isinstance(e, Adopt) for e in effects)
    return failed.reason


# -- joining --


def test_a_peer_joins_through_one_member_and_every_member_sees_it() -> None:
    c = lobby(4)
    owner, bob, _, zoe = c.ids
    joining, effects = attempt(c, bob)
    [adopted] = effects
    assert isinstance(adopted, Adopt) and joining.phase is Phase.ADOPTED
    assert [e.id for e in adopted.events] == c.order(bob)  # everything bob had, in order
    join = adopt(c, adopted)
    c.connect_all()
    c.settle()
    for peer in c.ids:
        assert zoe in c.members[peer].core.state.members
        assert c.order(peer) == c.order(owner)
    assert sorted(t for t in c.texts(zoe).values() if t) == [
        "hello from 0", "hello from 1", "hello from 2"]
    said = c.do(zoe, C.SendText("hi, I am new"))
    c.settle()
    assert all(c.texts(p)[said.id] == "hi, I am new" for p in c.ids)
    assert join.id in c.order(owner)


def test_the_member_pushes_every_event_then_its_vector_and_owes_the_rest() -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    reply = answer(c, bob, zoe)
    assert not isinstance(reply, RefuseOpen)
    assert isinstance(reply[-1], Vector) and not reply[-1].want
    assert dict(reply[-1].vector) == c.members[bob].core.frontier
    pushed = [e.id for p in reply[:-1] if isinstance(p, Events) for e in p.events]
    assert pushed == c.order(bob)
    assert all(isinstance(p, Events) and p.sync for p in reply[:-1])
    assert zoe in c.members[bob].invited  # its JOIN will make bob push what zoe lacks


def test_a_history_split_over_many_messages_completes_only_with_the_last() -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    for i in range(MAX_EVENTS):
        c.do(bob, C.SendText(f"line {i}"))
    c.settle()
    reply = answer(c, bob, zoe)
    assert not isinstance(reply, RefuseOpen)
    assert sum(isinstance(p, Events) for p in reply) >= 2
    joining = Joining(zoe, c.group, bob, "zoe")
    vector = reply[-1]
    assert joining.handle(HistoryArrived(bob, reply[0].events)) == []  # type: ignore[union-attr]
    assert feed(joining, bob, [vector]) == []  # the vector may overtake: keep waiting
    effects = feed(joining, bob, reply[1:-1])
    assert [type(e) for e in effects] == [Adopt]


def test_whitelist_admits_an_approved_peer() -> None:
    c = lobby(3, policy="whitelist")
    owner, bob, zoe = c.ids
    assert answer_open(c.group, c.members[bob], zoe) == RefuseOpen(zoe, c.group, J.NOT_APPROVED)
    c.do(owner, C.AuthorBody(Approve(zoe, True)))
    c.settle()
    _, effects = attempt(c, bob)
    [adopted] = effects
    assert isinstance(adopted, Adopt)
    adopt(c, adopted)
    c.connect_all()
    c.settle()
    assert zoe in c.members[owner].core.state.members


def test_a_rejoin_starts_from_what_was_stored_and_adopts_only_what_it_lacked() -> None:
    c = lobby(3)
    owner, bob, zoe = c.ids
    _, effects = attempt(c, bob)
    assert isinstance(effects[0], Adopt)
    adopt(c, effects[0])
    c.connect_all()
    c.settle()
    c.do(zoe, C.LeaveGroup())
    c.settle()
    later = c.do(owner, C.SendText("said after zoe left"))
    c.settle()
    assert zoe not in c.members[owner].core.state.members
    assert later.id not in c.order(zoe)
    stored = c.members[zoe].core.ordered()
    _, effects = attempt(c, bob, known=stored)
    [adopted] = effects
    assert isinstance(adopted, Adopt)
    assert later.id in [e.id for e in adopted.events]
    assert not {e.id for e in stored} & {e.id for e in adopted.events}
    adopt(c, adopted)
    c.settle()
    assert all(zoe in c.members[p].core.state.members for p in c.ids)
    assert c.texts(zoe)[later.id] == "said after zoe left"


# -- refusals: returned with their reason --


def test_a_banned_peer_is_refused_and_learns_why() -> None:
    c = lobby(3)
    owner, bob, zoe = c.ids
    c.do(owner, C.BanMember(zoe))
    c.settle()
    joining, effects = attempt(c, bob)
    assert failure(effects).endswith(f"refused: {J.BANNED}")
    assert joining.phase is Phase.FAILED
    assert zoe not in c.members[bob].invited


def test_a_private_group_an_unknown_one_and_a_former_member_all_say_no_open_group() -> None:
    private = Cluster(2)
    owner, stranger = private.ids
    assert answer_open(private.group, private.members[owner], stranger) == RefuseOpen(
        stranger, private.group, J.NO_OPEN_GROUP)
    assert answer_open(private.group, None, stranger) == RefuseOpen(
        stranger, private.group, J.NO_OPEN_GROUP)
    c = lobby(3)
    _, bob, zoe = c.ids
    c.do(bob, C.LeaveGroup())
    assert answer_open(c.group, c.members[bob], zoe) == RefuseOpen(
        zoe, c.group, J.NO_OPEN_GROUP)  # bob no longer hands out the group


def test_an_invalid_join_is_reported_and_nothing_is_adopted() -> None:
    c = lobby(3)
    owner, bob, zoe = c.ids
    c.do(owner, C.BanMember(zoe))
    c.settle()
    c.connect(bob, zoe)
    c.handle(bob, HistoryWanted(zoe))  # a member that pushes despite the ban
    joining = Joining(zoe, c.group, bob, "zoe")
    reason = failure(feed(joining, bob, list(c.flight.pop((bob, zoe)))))  # type: ignore[arg-type]
    assert reason == "cannot join 'test': that peer is banned from this group"


def test_a_history_without_create_cannot_be_joined() -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    joining = Joining(zoe, c.group, bob, "zoe")
    assert joining.handle(HistoryArrived(bob, ())) == []
    assert failure(joining.handle(VectorArrived(bob, ()))) == (
        "cannot join 'this group': the member sent no CREATE")


# -- a member that misbehaves --


def test_garbage_is_dropped_with_a_warning_and_the_rest_still_counts() -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    other = Cluster(2, mode="open", seed=9)
    foreign = other.members[other.ids[0]].core.ordered()  # another group's events
    reply = answer(c, bob, zoe)
    assert not isinstance(reply, RefuseOpen)
    joining = Joining(zoe, c.group, bob, "zoe")
    warned = joining.handle(HistoryArrived(bob, tuple(foreign)))
    assert [w.text.split(": ")[-1] for w in warned if isinstance(w, Warn)] == [
        "event for another group"]
    effects = feed(joining, bob, reply)
    assert [type(e) for e in effects] == [Adopt]
    assert not {e.id for e in foreign} & {e.id for e in effects[0].events}  # type: ignore[union-attr]


def test_an_incomplete_history_never_adopts_and_the_timeout_says_so() -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    reply = answer(c, bob, zoe)
    assert not isinstance(reply, RefuseOpen)
    first = reply[0]
    assert isinstance(first, Events)
    short = Events(first.events[:-1])  # the member leaves out its last event
    joining = Joining(zoe, c.group, bob, "zoe")
    assert feed(joining, bob, [short, reply[-1]]) == []
    have, want = len(first.events) - 1, len(first.events)
    assert failure(joining.handle(TimedOut())).endswith(
        f"sent an incomplete history ({have} of {want} events)")


def test_silence_and_a_missing_vector_fail_on_the_timeout_with_what_arrived() -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    silent = Joining(zoe, c.group, bob, "zoe")
    assert failure(silent.handle(TimedOut())).startswith("no answer from")
    reply = answer(c, bob, zoe)
    assert not isinstance(reply, RefuseOpen)
    mute = Joining(zoe, c.group, bob, "zoe")
    assert feed(mute, bob, reply[:-1]) == []
    assert "never said how many it has" in failure(mute.handle(TimedOut()))


def test_only_the_member_asked_speaks_for_the_attempt() -> None:
    c = lobby(3)
    owner, bob, zoe = c.ids
    joining = Joining(zoe, c.group, bob, "zoe")
    assert joining.handle(RefusalArrived(owner, "go away")) == []
    assert joining.handle(VectorArrived(owner, ())) == []
    assert joining.handle(HistoryArrived(owner, tuple(c.members[owner].core.ordered()))) == []
    assert joining.phase is Phase.ASKING and joining.core.size() == 0


def test_a_member_that_sends_too_much_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    c = lobby(3)
    _, bob, zoe = c.ids
    monkeypatch.setattr(J, "MAX_JOIN_BYTES", 500)
    reply = answer(c, bob, zoe)
    assert not isinstance(reply, RefuseOpen)
    joining = Joining(zoe, c.group, bob, "zoe")
    assert failure(feed(joining, bob, reply)).endswith("sent more than 500 bytes of events")


def test_after_the_end_peer_input_is_ignored_and_a_timeout_is_a_local_error() -> None:
    c = lobby(3)
    _, bob, _ = c.ids
    joining, effects = attempt(c, bob)
    assert isinstance(effects[0], Adopt)
    assert joining.handle(RefusalArrived(bob, "too late")) == []
    assert joining.handle(HistoryArrived(bob, ())) == []
    with pytest.raises(LocalProtocolError):
        joining.handle(TimedOut())
    assert joining.phase is Phase.ADOPTED


def test_an_unban_in_the_history_lets_a_former_member_join_again() -> None:
    c = lobby(3)
    owner, bob, zoe = c.ids
    _, effects = attempt(c, bob)
    assert isinstance(effects[0], Adopt)
    adopt(c, effects[0])
    c.connect_all()
    c.settle()
    c.do(owner, C.BanMember(zoe))
    c.settle()
    stored = c.members[zoe].core.ordered()
    c.disconnect(bob, zoe)
    assert failure(attempt(c, bob, known=stored)[1]).endswith(J.BANNED)
    c.do(owner, C.AuthorBody(Unban(zoe)))
    c.settle()
    c.disconnect(bob, zoe)
    _, effects = attempt(c, bob, known=stored)
    [adopted] = effects
    assert isinstance(adopted, Adopt)
    adopt(c, adopted)
    c.connect_all()
    c.settle()
    assert all(zoe in c.members[p].core.state.members for p in c.ids)


def test_create_and_join_bodies_are_what_the_joiner_authors() -> None:
    c = lobby(3)
    _, bob, _ = c.ids
    _, effects = attempt(c, bob)
    [adopted] = effects
    assert isinstance(adopted, Adopt)
    assert adopted.join == Join("zoe")
    assert isinstance(adopted.core.state.name, str) and adopted.core.state.name == "test"
    assert any(e.kind.name == "CREATE" for e in adopted.events)
