"""Pulled sync in a group with server-side fanout: a member does not pull from the
author (or anyone) the events a relay is pushing it, yet still gets them from the
author when the relay withholds them (``node.group.pulling``, relay-fed authors)."""

from __future__ import annotations

from node.group import commands as C
from node.group.member_io import Announce, Effect, Events, Received, Send, SendMany, Vector
from node.group.pulling import RELAY_WAIT
from node.ids import PeerId
from tests.group.relay_cluster import RelayCluster, messages


def _sync_sent(c: RelayCluster, author: PeerId) -> list[int]:
    """Record the number of events each sync batch ``author`` sends carries."""
    sent: list[int] = []
    run = c.run

    def recording(peer: PeerId, effects: list[Effect]) -> object:
        if peer == author:
            for e in effects:
                if isinstance(e, Send | SendMany) and isinstance(e.payload, Events) \
                        and e.payload.sync:
                    sent.append(len(e.payload.events))
        return run(peer, effects)

    c.run = recording  # type: ignore[method-assign,assignment]
    return sent


def _burst_announced_early(c: RelayCluster, count: int) -> PeerId:
    """The author's first message goes through the relay to every member; then it sends
    ``count`` more and tells the members its vector before the relay pushed them."""
    c.connect_all()
    c.settle()
    author = c.member_ids[1]
    c.do(author, C.SendText("warm up"))  # (a private group's first message rotates)
    c.settle()
    c.do(author, C.SendText("first"))
    assert c.transfer(author, c.relay_id)
    for peer in c.member_ids:
        if peer != author:
            assert c.transfer(c.relay_id, peer)  # the relay pushed it
    for k in range(count):
        c.do(author, C.SendText(f"m{k}"))  # in flight to the relay
    c.handle(author, Announce())  # the members do not hold all it holds: it tells them
    for peer in c.member_ids:
        while c.transfer(author, peer):  # its vector overtakes the relay's pushes
            pass
    return author


def test_members_do_not_pull_what_the_relay_is_pushing() -> None:
    c = RelayCluster(6, seed=21, fanout="relay")
    sent = _sync_sent(c, c.member_ids[1])
    author = _burst_announced_early(c, 10)
    c.settle()
    assert sent == [], "members pulled from the author what the relay pushes them"
    texts = ["first", *(f"m{k}" for k in range(10))]
    last = c.members[author].core.ordered()[-1]
    for peer in c.member_ids:
        assert messages(c, peer)[-11:] == texts
        if peer != author:  # delivery states stay exact: each member acknowledged
            assert c.members[author].has(peer, last)


def test_a_withholding_relay_only_delays() -> None:
    c = RelayCluster(6, seed=22, fanout="relay")
    sent = _sync_sent(c, c.member_ids[1])
    start = c.now
    author = _burst_announced_early(c, 10)
    c.misbehave = "drop"  # from now on the relay pushes nothing
    c.settle()
    texts = ["first", *(f"m{k}" for k in range(10))]
    for peer in c.member_ids:
        assert messages(c, peer)[-11:] == texts
    assert sum(sent) >= 10  # the members pulled them from the author after all
    last = c.members[author].core.ordered()[-1].id
    for peer in c.member_ids:  # ...once the relay was silent for RELAY_WAIT
        assert c.disks[peer].received[last] <= start + RELAY_WAIT + 1


def test_the_author_does_not_stream_the_relay_what_it_fans_out_through_it() -> None:
    """A relay that asks the author for what it lacks while the author's flagged copies
    are on their way to it must not get them by sync first: it fans out only what
    arrives flagged, so the members would wait for them (the author's live pushes in
    flight, ``Sessions.in_flight``, extended to the relay it fans out through)."""
    c = RelayCluster(5, seed=23, fanout="relay")
    c.connect_all()
    c.settle()
    author = c.member_ids[1]
    c.do(author, C.SendText("warm up"))
    c.settle()
    relay = c.relay
    asked = Vector(tuple(sorted(relay.vector())), True)  # what it holds before the burst
    for k in range(5):
        c.do(author, C.SendText(f"m{k}"))  # flagged copies in flight to the relay
    effects = c.members[author].handle(Received(c.relay_id, asked), c.now)
    streamed = [e for e in effects if isinstance(e, Send) and e.peer == c.relay_id
                and isinstance(e.payload, Events) and e.payload.sync]
    assert streamed == [], "the author streamed the relay what it fans out through it"
    c.run(author, effects)
    c.settle()
    for peer in c.member_ids:
        assert messages(c, peer)[-5:] == [f"m{k}" for k in range(5)]
