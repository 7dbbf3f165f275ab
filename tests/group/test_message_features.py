"""Deletes, pins and admin mutes in the pure core: who may, and the same outcome everywhere."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.group.bodies import Add, Body, Delete, Mute, Pin, Role, encode_body, kind_of
from node.group.events import Event, EventId
from node.group.state import Deleted, Delivered, Rejected
from node.testing.groups import Replica

KEYS = [IdentityKey(bytes([i]) * 32) for i in range(1, 6)]
OWNER, ADMIN, BOB, CAROL = (k.peer_id for k in KEYS[:4])


def team() -> tuple[list[Replica], list[Event]]:
    """owner, admin, bob, carol (members), all up to date; returns the history."""
    owner, create = Replica.founding(KEYS[0], mode="pairwise")
    history = [create,
               owner.author(Add(ADMIN, Role.ADMIN, "admin")),
               owner.author(Add(BOB, Role.MEMBER, "bob")),
               owner.author(Add(CAROL, Role.MEMBER, "carol"))]
    replicas = [owner]
    for key in KEYS[1:4]:
        r = Replica(key, owner.core.group_id)
        r.receive(*history)
        replicas.append(r)
    return replicas, history


def forge(replica: Replica, body: Body) -> Event:
    """Sign an event as ``replica`` would, WITHOUT its own core checking it."""
    unsigned = replica.core.next_event(replica.peer_id, replica.epoch, kind_of(body),
                                       encode_body(body))
    return unsigned.signed(bytes(replica.key.signing_key.sign(unsigned.signing_bytes()).signature))


def rejected(replica: Replica, event: Event) -> str:
    effects = replica.receive(event)
    reasons = [e.reason for e in effects if isinstance(e, Rejected)]
    assert reasons, effects
    return reasons[0]


def test_author_deletes_own_message_everywhere() -> None:
    (owner, admin, bob, carol), _ = team()
    m = bob.say("oops")
    d = bob.author(Delete(m.id))
    for r in (owner, admin, carol):
        effects = r.receive(m, d)
        assert [e.target for e in effects if isinstance(e, Deleted)] == [m.id]
        assert r.core.deleted[m.id].id == d.id


def test_admin_deletes_anyones_message_but_a_member_cannot() -> None:
    (owner, admin, bob, carol), _ = team()
    m = bob.say("spam")
    for r in (admin, carol):
        r.receive(m)
    admin.author(Delete(m.id))  # the admin's own core accepts it
    bad = forge(carol, Delete(m.id))
    owner.receive(m)
    assert "only the author or an admin may delete" in rejected(owner, bad)
    assert m.id not in owner.core.deleted


def test_delete_of_unknown_or_non_message_or_unseen_event_is_rejected() -> None:
    (owner, admin, bob, carol), history = team()
    assert "in this event's past" in rejected(owner, forge(bob, Delete(EventId(b"\1" * 32))))
    (owner, admin, bob, carol), history = team()
    assert "only messages" in rejected(owner, forge(admin, Delete(history[2].id)))
    (owner, admin, bob, carol), history = team()
    m = carol.say("bob has not seen this")
    owner.receive(m)
    assert "in this event's past" in rejected(owner, forge(admin, Delete(m.id)))


def test_pins_are_for_admins_and_the_last_pin_wins() -> None:
    (owner, admin, bob, carol), _ = team()
    m = bob.say("read the rules")
    for r in (owner, admin, carol):
        r.receive(m)
    p = admin.author(Pin(m.id, True))
    assert admin.core.pinned() == [m.id]
    assert "only owner and admins may pin" in rejected(owner, forge(carol, Pin(m.id, True)))
    owner.receive(p)
    u = owner.author(Pin(m.id, False))
    assert owner.core.pinned() == []
    admin.receive(u)
    assert admin.core.pinned() == []


def test_a_muted_member_cannot_post_until_unmuted() -> None:
    (owner, admin, bob, _carol), _ = team()
    mute = admin.author(Mute(BOB, True, 0))
    bob.receive(mute)
    late = forge(bob, _message(bob))
    owner.receive(mute)
    assert "muted by an admin" in rejected(owner, late)
    unmute = admin.author(Mute(BOB, False, 0))
    bob2 = Replica(KEYS[2], owner.core.group_id)
    bob2.receive(*owner.core.ordered(), unmute)
    again = bob2.say("I am back")
    owner.receive(unmute)
    assert [e.event for e in owner.receive(again) if isinstance(e, Delivered)] == [again]
    assert not owner.core.is_muted(again)


def test_mute_rules_on_roles() -> None:
    (owner, admin, _bob, carol), _ = team()
    assert "only owner and admins may mute" in rejected(owner, forge(carol, Mute(BOB, True, 0)))
    assert "below one's own role" in rejected(owner, forge(admin, Mute(OWNER, True, 0)))
    assert "not muted" in rejected(owner, forge(admin, Mute(BOB, False, 0)))
    owner.author(Mute(ADMIN, True, 0))  # the owner may mute an admin
    assert owner.core.state.muted() == {ADMIN: 0}


def _message(replica: Replica) -> Body:
    import os

    from node.group.bodies import PairwiseMessage

    return PairwiseMessage(os.urandom(16), os.urandom(32))


def _scenario() -> tuple[list[Event], list[Replica], dict[str, Event]]:
    """A mute, a message made concurrently with it, one refused after it, a delete, a pin."""
    (owner, admin, bob, carol), history = team()
    early = bob.say("before anything")
    for r in (owner, admin, carol):
        r.receive(early)
    mute = admin.author(Mute(BOB, True, 1_700_000_000))
    concurrent = bob.say("did not see the mute")
    carol_says = carol.say("hello")
    bob.receive(mute)
    refused = forge(bob, _message(bob))
    owner.receive(mute, concurrent, carol_says)
    delete = owner.author(Delete(carol_says.id))
    pin = owner.author(Pin(early.id, True))
    events = [*history, early, mute, concurrent, carol_says, refused, delete, pin]
    named = {"early": early, "concurrent": concurrent, "refused": refused,
             "carol": carol_says, "mute": mute}
    return events, [owner, admin, bob, carol], named


SCENARIO = _scenario()


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_every_delivery_order_gives_the_same_deletes_pins_and_mutes(rnd: random.Random) -> None:
    events, replicas, named = SCENARIO
    order = list(events)
    rnd.shuffle(order)
    fresh = Replica(KEYS[4], replicas[0].core.group_id)
    effects = fresh.receive(*order)
    refused = [e for e in effects if isinstance(e, Rejected)]
    assert [e.event.id for e in refused] == [named["refused"].id]
    core = fresh.core
    assert set(core.deleted) == {named["carol"].id}
    assert core.pinned() == [named["early"].id]
    assert core.state.muted() == {BOB: 1_700_000_000}
    visible = {e.id for e in core.ordered() if e.kind.name == "MESSAGE" and not core.is_muted(e)}
    assert visible == {named["early"].id, named["carol"].id}
    assert core.saw(named["mute"].id, named["early"].id)
    assert not core.saw(named["mute"].id, named["concurrent"].id)
