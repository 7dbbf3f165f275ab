"""Inputs and commands the drivers use beyond messages: a joiner's history, a key now."""

from __future__ import annotations

from node.group import commands as C
from node.group.events import Kind
from node.group.member_io import Events, HistoryWanted, PeerUp, Refused, Send
from tests.group.cluster import Cluster


def test_rotate_key_starts_a_fresh_epoch_in_private_groups_only() -> None:
    c = Cluster(2)
    alice, bob = c.ids
    c.do(alice, C.AddMember(bob))
    first = c.do(alice, C.RotateKey())
    second = c.do(alice, C.RotateKey())
    assert first.kind is Kind.SENDER_KEY and second.kind is Kind.SENDER_KEY
    assert second.epoch == first.epoch + 1
    effects = Cluster(2, mode="open").members[c.ids[0]].handle(C.RotateKey(), c.now)
    assert [e.reason for e in effects if isinstance(e, Refused)] == [
        "only private groups have sender keys"]


def test_history_wanted_pushes_everything_and_owes_the_peer_what_it_lacks() -> None:
    c = Cluster(2, mode="open")
    alice, joiner = c.ids
    c.do(alice, C.SendText("hello whoever joins"))
    member = c.members[alice]
    member.handle(PeerUp(joiner), c.now)
    effects = member.handle(HistoryWanted(joiner), c.now)
    sent = [e.payload for e in effects if isinstance(e, Send) and e.peer == joiner
            and isinstance(e.payload, Events)]
    assert [ev.id for m in sent for ev in m.events] == [e.id for e in member.core.ordered()]
    assert all(m.sync for m in sent)
    assert joiner in member.invited
