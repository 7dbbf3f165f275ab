"""Nothing unreadable is shown delivered (issue 12, item 9): a member that stores a
message it cannot read tells the author, who stops counting it delivered there; a
pairwise copy that was relayed without the recipient's ciphertext is sent again."""

from __future__ import annotations

from node.group import commands as C
from node.group.bodies import PrivateMessage
from node.group.member_io import Ack, Announce, Got, Received, Send
from tests.group.cluster import Cluster
from tests.group.test_member_bad_input import feed, forge, scene, sender_key


def test_a_message_a_member_cannot_read_is_not_delivered_to_it() -> None:
    c, alice, _bob, mallory = scene()
    c.do(mallory, C.SendText("readable"))
    c.settle()
    # a message of mallory's that nobody can open (her own node made it, so it is hers)
    author = c.members[mallory]
    bad = forge(author.core.copy(), mallory, PrivateMessage(1, c.rng.randbytes(64)),
                sender_key(c, mallory))
    author.core.receive(bad)
    author.own_ids.add(bad.id)
    effects = feed(c, alice, mallory, bad)
    told = [e.payload for e in effects if isinstance(e, Send) and e.peer == mallory
            and isinstance(e.payload, Ack) and e.payload.kind == "unread"]
    assert told == [Ack((bad.id,), "unread")]
    # the ack that says "stored" still goes to whoever sent it (sync must not resend it)
    assert any(isinstance(e, Send) and e.peer == mallory and isinstance(e.payload, Got)
               and dict(e.payload.upto)[mallory] >= bad.seq for e in effects)
    c.settle()
    assert alice in author.unreadable_by[bad.id]
    assert author.has(alice, bad)  # stored there...
    # ...but the view leaves alice out of delivered_to (node.api.views uses unreadable_by)


def test_a_pairwise_message_relayed_without_its_copy_gets_its_copy_again() -> None:
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
    reader = c.members[carol]
    assert said.id in {e.id for e in reader.core.ordered()}
    assert reader.texts.get(said.id) is None  # relayed by alice, without carol's copy
    assert said.id in reader.unread_reports[bob]  # to tell bob when they meet
    author = c.members[bob]
    c.connect(bob, carol)
    c.settle()
    assert reader.texts[said.id] == "for each of you"  # the copy came again
    assert carol not in author.unreadable_by.get(said.id, set())  # and she said so
    assert said.id not in reader.told_unread


def test_an_unread_report_from_a_stranger_is_ignored() -> None:
    c, alice, _bob, _mallory = scene()
    said = c.do(alice, C.SendText("mine"))
    c.settle()
    stranger = Cluster(1, seed=9).ids[0]
    c.members[alice].handle(Received(stranger, Ack((said.id,), "unread")), c.now)
    assert said.id not in c.members[alice].unreadable_by
