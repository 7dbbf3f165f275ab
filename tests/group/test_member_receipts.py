"""Cumulative, coalesced acknowledgements (``Got``) keep delivery states exact.

The state an author shows for its own message (pending, sent, delivered, and who cannot
read it) is computed from what it was told: ``has(member, event)`` less ``unreadable_by``.
The old per-id acks told it exactly which members stored which event. Here every scenario
checks the same two things against the truth (the events each member *persisted*):

* never ahead: at every step, the author counts a member as holding an event only if that
  member's disk holds it (an acknowledgement only covers stored events);
* exact once quiet: after the cluster settles, the states are exactly the truth's,
  as the per-id acks gave them.

And a burst costs one acknowledgement per member, not one per message.
"""

from __future__ import annotations

from node.group import commands as C
from node.group.bodies import PrivateMessage
from node.group.delivery import ACK_DELAY
from node.group.events import Event, Kind
from node.group.member_io import Ack, Announce, Events, Got, Received, Tick, Vector
from node.ids import PeerId
from tests.group.cluster import Cluster
from tests.group.test_member_bad_input import forge, scene, sender_key


def state(c: Cluster, author: PeerId, event: Event, *, truth: bool = False) -> str:
    """pending / sent / delivered as ``node.api.views`` computes it; with ``truth``, from
    what each member actually persisted and can read instead of what the author was told."""
    me = c.members[author]
    others = [m for m in me.core.state.members if m != author]
    if truth:
        have = {m for m in others if event.id in c.disks[m].received
                and (event.kind is not Kind.MESSAGE
                     or c.members[m].texts.get(event.id) is not None)}
    else:
        have = {m for m in others if me.has(m, event)} - me.unreadable_by.get(event.id, set())
    if not others or have == set(others):
        return "delivered"
    return "sent" if have else "pending"


def never_ahead(c: Cluster, author: PeerId) -> None:
    me = c.members[author]
    for event in me.core.ordered():
        if event.author != author:
            continue
        for member in c.ids:
            if member != author and me.has(member, event):
                assert event.id in c.disks[member].received, (member, event.seq)


def exact(c: Cluster, author: PeerId) -> None:
    for event in c.members[author].core.ordered():
        if event.author == author:
            assert state(c, author, event) == state(c, author, event, truth=True), event.seq


def step(c: Cluster, watched: PeerId) -> None:
    """Move one message at a time, checking "never ahead" after each."""
    for _ in range(100_000):
        keys = sorted(k for k, q in c.flight.items() if q)
        if keys:
            c.transfer(*keys[0])
        else:
            due = [(min(w), p) for p, w in c.wakes.items() if w]
            if not due:
                return
            at, peer = min(due)
            c.now = max(c.now, at)
            c.wakes[peer] = [w for w in c.wakes[peer] if w > c.now]
            c.handle(peer, Tick())
        never_ahead(c, watched)
    raise AssertionError("did not settle")


def gots(c: Cluster, src: PeerId, dst: PeerId) -> list[Got]:
    return [p for p in c.flight.get((src, dst), ()) if isinstance(p, Got)]


def test_a_burst_is_acknowledged_once_per_member_and_states_are_exact() -> None:
    c, alice, bob, carol = scene()
    said = [c.do(alice, C.SendText(f"m{i}")) for i in range(20)]
    assert all(state(c, alice, e) == "pending" for e in said)
    for peer in (bob, carol):
        while c.transfer(alice, peer):
            never_ahead(c, alice)
        assert gots(c, peer, alice) == []  # nothing yet: coalescing
    c.now += ACK_DELAY
    for peer in (bob, carol):
        c.handle(peer, Tick())
        assert gots(c, peer, alice) == [Got(((alice, said[-1].seq),))]  # one for all 20
        assert not any(isinstance(p, Ack) for p in c.flight[(peer, alice)])
    step(c, alice)
    assert all(state(c, alice, e) == "delivered" for e in said)
    exact(c, alice)


def test_a_lost_acknowledgement_is_made_good_by_the_next_one() -> None:
    c, alice, bob, _carol = scene()
    first = [c.do(alice, C.SendText(f"a{i}")) for i in range(3)]
    while c.transfer(alice, bob):
        pass
    c.now += ACK_DELAY
    c.handle(bob, Tick())
    assert len(gots(c, bob, alice)) == 1
    c.flight[(bob, alice)].clear()  # lost (as if the channel broke before it was read)
    step(c, alice)
    assert all(state(c, alice, e) == "sent" for e in first)  # carol's came, not bob's
    assert [c.members[alice].has(bob, e) for e in first] == [False] * 3
    later = c.do(alice, C.SendText("later"))
    step(c, alice)
    assert all(state(c, alice, e) == "delivered" for e in [*first, later])  # cumulative
    exact(c, alice)


def test_events_out_of_order_are_acknowledged_only_once_stored() -> None:
    c, alice, bob, carol = scene()
    c.disconnect(alice, bob)
    one = c.do(alice, C.SendText("one"))
    two = c.do(alice, C.SendText("two"))
    # bob gets two before one (through carol, say): two waits for its causal past
    c.handle(bob, Received(carol, Events((two,))))
    c.now += ACK_DELAY
    c.handle(bob, Tick())
    assert gots(c, bob, carol) == []  # nothing of alice's stored beyond what carol knows
    assert two.id not in c.disks[bob].received
    c.handle(bob, Received(carol, Events((one,))))
    c.now += ACK_DELAY
    c.handle(bob, Tick())
    assert gots(c, bob, carol) == [Got(((alice, two.seq),))]
    step(c, alice)
    c.connect(alice, bob)  # alice learns it from bob's vector
    step(c, alice)
    assert state(c, alice, one) == state(c, alice, two) == "delivered"
    exact(c, alice)


def test_sync_batches_are_acknowledged_at_once_and_the_author_learns_by_vector() -> None:
    c, alice, bob, carol = scene()
    c.disconnect(alice, carol)
    c.disconnect(bob, carol)
    said = [c.do(alice, C.SendText(f"s{i}")) for i in range(300)]  # more than one batch
    step(c, alice)
    assert all(state(c, alice, e) == "sent" for e in said)
    c.connect(bob, carol)  # bob streams carol what she lacks, batch by batch
    step(c, alice)
    assert all(e.id in c.disks[carol].received for e in said)
    assert all(state(c, alice, e) == "sent" for e in said)  # alice was told nothing yet
    c.connect(alice, carol)
    step(c, alice)
    assert all(state(c, alice, e) == "delivered" for e in said)
    exact(c, alice)


def test_older_per_id_acks_still_count_and_imply_the_earlier_events() -> None:
    c, alice, bob, carol = scene()
    c.disconnect(alice, bob)
    said = [c.do(alice, C.SendText(f"o{i}")) for i in range(4)]
    step(c, alice)
    for e in said[:3]:  # bob got three of them some other way
        c.handle(bob, Received(carol, Events((e,))))
    c.flight.pop((bob, carol), None)
    me = c.members[alice]
    effects = me.handle(Received(bob, Ack((said[2].id,))), c.now)  # an older node's ack
    c.run(alice, effects)
    assert [me.has(bob, e) for e in said] == [True, True, True, False]
    never_ahead(c, alice)
    assert [state(c, alice, e) for e in said] == ["delivered"] * 3 + ["sent"]
    exact(c, alice)


def test_a_strangers_acknowledgement_is_ignored_a_departed_members_counts() -> None:
    c, alice, _bob, carol = scene()
    stranger = Cluster(4).ids[3]
    me = c.members[alice]
    said = c.do(alice, C.SendText("for the members"))
    assert me.handle(Received(stranger, Got(((alice, said.seq),))), c.now) == []
    assert not me.has(stranger, said)
    c.disconnect(alice, carol)
    c.do(alice, C.RemoveMember(carol))
    effects = me.handle(Received(carol, Got(((alice, said.seq),))), c.now)
    assert me.has(carol, said) and effects  # a departed member's receipt still counts


def test_an_unreadable_message_is_not_delivered_even_if_acknowledged() -> None:
    c, alice, _bob, mallory = scene()
    c.do(mallory, C.SendText("readable"))
    c.settle()
    author = c.members[mallory]
    bad = forge(author.core.copy(), mallory, PrivateMessage(1, c.rng.randbytes(64)),
                sender_key(c, mallory))
    author.core.receive(bad)
    author.own_ids.add(bad.id)
    c.handle(alice, Received(mallory, Events((bad,))))
    c.now += ACK_DELAY
    c.handle(alice, Tick())
    c.settle()
    assert author.has(alice, bad) and alice in author.unreadable_by[bad.id]
    assert state(c, mallory, bad) != "delivered"


def test_receipts_survive_a_restart() -> None:
    c, alice, bob, carol = scene()
    said = [c.do(alice, C.SendText(f"r{i}")) for i in range(5)]
    c.settle()
    before = [state(c, alice, e) for e in said]
    assert before == ["delivered"] * 5
    rows = sum(1 for e in said if c.disks[alice].acked.get(e.id))
    assert rows <= 2  # one row per member per rise, not one per event
    c.restart(alice)
    assert [state(c, alice, e) for e in said] == before
    assert all(c.members[alice].own_upto[m] >= said[-1].seq for m in (bob, carol))


def test_a_vector_sent_covers_what_was_owed() -> None:
    c, alice, bob, _carol = scene()
    said = c.do(alice, C.SendText("covered by a vector"))
    while c.transfer(alice, bob):
        pass
    assert c.members[bob].owed.get(alice)
    c.handle(bob, Announce())
    assert alice not in c.members[bob].owed  # the vector says it all
    c.now += ACK_DELAY
    c.handle(bob, Tick())
    assert gots(c, bob, alice) == []
    assert any(isinstance(p, Vector) for p in c.flight[(bob, alice)])
    while c.transfer(bob, alice):  # ...and the author takes it as the receipt it is
        never_ahead(c, alice)
    assert bob in c.members[alice].acked[said.id]  # (what the per-id acks said)
    assert bob in c.disks[alice].acked[said.id]  # stored, as a Got's would be
    assert state(c, alice, said) in ("sent", "delivered")
