"""Sealed sender-key copies (docs/protocol.md section 13): each member gets only its own,
beside the event; one that was away gets it from a member that held it for it; a copy
that does not match the commitment is refused and sent again; what is held is bounded."""

from __future__ import annotations

import dataclasses

from node.crypto import sender_keys
from node.crypto.sender_keys import OwnSenderKey
from node.group import commands as C
from node.group.events import Event, Kind
from node.group.key_copies import HELD_BYTES, HELD_ENTRY
from node.group.member_io import Ack, Events, Received, Send
from node.ids import PeerId
from tests.group.cluster import Cluster


def talking(n: int) -> Cluster:
    """``n`` members, connected, each has sent one message (everyone holds every key)."""
    c = Cluster(n)
    for p in c.ids[1:]:
        c.do(c.ids[0], C.AddMember(p))
    c.connect_all()
    c.settle()
    for p in c.ids:
        c.do(p, C.SendText(f"hello from {p.hex()[:4]}"))
    c.settle()
    return c


def key_event(c: Cluster, author: PeerId) -> Event:
    return [e for e in c.members[author].core.ordered()
            if e.author == author and e.kind is Kind.SENDER_KEY][-1]


def carol_away(text: str) -> tuple[Cluster, PeerId, PeerId, PeerId, Event]:
    """alice, bob and carol; carol cut off from both while alice rotates and says ``text``."""
    c = talking(3)
    alice, bob, carol = c.ids
    c.disconnect(alice, carol)
    c.disconnect(bob, carol)
    c.do(alice, C.RotateKey())
    said = c.do(alice, C.SendText(text))
    c.settle()
    return c, alice, bob, carol, said


def forget_held(c: Cluster, *holders: PeerId) -> None:
    """The copies ``holders`` held for others are gone (as after a restart: not stored)."""
    for holder in holders:
        c.members[holder].held.clear()
        c.members[holder].held_bytes = 0


def test_each_member_gets_only_its_own_copy() -> None:
    c = talking(3)
    alice, bob, carol = c.ids
    c.do(alice, C.RotateKey())
    sent = [(to, p) for (src, to), q in c.flight.items() if src == alice for p in q]
    assert {to for to, _ in sent} == {bob, carol}
    sk = key_event(c, alice)
    for to, payload in sent:
        assert isinstance(payload, Events) and payload.events == (sk,)
        assert [i for i, _ in payload.copies] == [sk.id] and payload.held == ()
        assert payload.copies[0][1] == c.members[alice].own_copies[sk.id][to]
    assert b"keys" not in sk.body and len(sk.body) < 120  # no sealed key inside the event
    c.settle()
    said = c.do(alice, C.SendText("new epoch"))
    c.settle()
    assert c.members[bob].texts[said.id] == c.members[carol].texts[said.id] == "new epoch"
    assert not c.members[bob].held and not c.members[carol].held  # nobody holds anything


def test_a_member_away_gets_its_copy_from_a_member_who_held_it() -> None:
    c, alice, bob, carol, said = carol_away("while carol was away")
    sk = key_event(c, alice)
    assert set(c.members[bob].held[sk.id]) == {carol}  # alice could not reach her
    assert set(c.members[alice].held[sk.id]) == {carol}  # and holds it herself too
    c.connect(bob, carol)  # carol meets bob only
    c.settle()
    assert c.members[carol].texts[said.id] == "while carol was away"
    assert sk.id not in c.members[bob].held  # carol acknowledged it: forgotten
    assert c.members[bob].held_bytes == 0


def test_copies_cross_a_partition_with_the_event() -> None:
    c = talking(4)
    a, b, cc, d = c.ids
    c.partition([a, b], [cc, d])
    c.do(a, C.RotateKey())
    said = c.do(a, C.SendText("from the other side"))
    c.settle()
    assert c.members[d].texts.get(said.id) is None
    c.connect(b, cc)  # one link heals; d never meets a or b
    c.settle()
    assert c.members[cc].texts[said.id] == "from the other side"
    assert c.members[d].texts[said.id] == "from the other side"


def test_a_copy_that_does_not_match_is_refused_then_sent_again() -> None:
    c = talking(2)
    alice, bob = c.ids
    c.disconnect(alice, bob)
    c.do(alice, C.RotateKey())
    sk = key_event(c, alice)
    # bob gets the event with a copy sealed (anyone can seal) to another chain state
    other = OwnSenderKey.generate(c.rng.randbytes).receiver_state()
    forged = sender_keys.seal_for(c.keys[1].x25519_public,
                                  dataclasses.replace(other, signing_public=b"\0" * 32))
    c.connect(alice, bob)
    c.flight.clear()
    c.handle(bob, Received(alice, Events((sk,), ((sk.id, forged),), sync=True)))
    reader = c.members[bob]
    assert (alice, sk.epoch) not in reader.keys.peers  # not taken
    assert any("does not match" in w.text for w in c.warnings[bob])
    told = [p for p in c.flight.get((bob, alice), ()) if isinstance(p, Ack)
            and p.kind == "unread"]
    assert told == [Ack((sk.id,), "unread")]
    c.settle()  # alice sends the event again, with bob's real copy
    assert (alice, sk.epoch) in reader.keys.peers
    said = c.do(alice, C.SendText("after a forged copy"))
    c.settle()
    assert reader.texts[said.id] == "after a forged copy"


def test_a_message_read_without_its_key_brings_the_key_again() -> None:
    c, alice, bob, carol, said = carol_away("relayed without a key")
    forget_held(c, bob, alice)
    c.connect(bob, carol)
    c.settle()
    reader = c.members[carol]
    assert reader.texts.get(said.id) is None  # bob relayed it without carol's copy
    assert said.id in reader.unread_reports[alice]
    c.connect(alice, carol)  # carol tells alice, who pushes the key event with her copy
    c.settle()
    assert reader.texts[said.id] == "relayed without a key"
    assert (key_event(c, alice).id, carol) in c.members[alice].keys_resent


def test_a_key_pushed_again_and_lost_with_the_channel_is_pushed_once_more() -> None:
    """kith bench scale at N = 64/100: a member that got a SENDER_KEY by sync without its
    copy says ``unread``; the author's one push of the key is lost when the channel drops
    (a slow member's full queue drops the peer). On the next channel the member says
    ``unread`` again and the author answers again: before, both sides did it only once
    (``told_unread``, ``keys_resent``) and the member never read that chain."""
    c, alice, bob, carol, said = carol_away("a push lost with its channel")
    forget_held(c, alice, bob)
    c.connect(bob, carol)
    c.settle()
    reader = c.members[carol]
    assert reader.texts.get(said.id) is None  # bob relayed it without carol's copy
    c.connect(alice, carol)
    while c.transfer(carol, alice):  # carol says unread; alice pushes the key once more...
        pass
    sk = key_event(c, alice)
    assert (sk.id, carol) in c.members[alice].keys_resent
    assert any(isinstance(p, Events) and sk.id in dict(p.copies)
               for p in c.flight.get((alice, carol), ()))
    c.disconnect(alice, carol)  # ...and the channel drops with the push in it
    c.settle()
    assert reader.texts.get(said.id) is None
    c.connect(alice, carol)  # a new channel: carol asks again, alice answers again
    c.settle()
    assert reader.texts[said.id] == "a push lost with its channel"
    c.disconnect(alice, carol)
    c.connect(alice, carol)
    c.settle()  # read now: nothing is asked or pushed again
    assert said.id not in reader.told_unread and not reader.unread_reports.get(alice)


def test_copies_held_for_others_are_bounded() -> None:
    c = talking(3)
    alice, bob, carol = c.ids
    c.do(alice, C.RotateKey())
    c.settle()
    sk = key_event(c, alice)
    holder = c.members[bob]
    blob = b"x" * 89
    many = tuple((sk.id, PeerId(bytes([i]) * 32), blob) for i in range(256))
    holder.hold(alice, many)  # strangers: not members, nothing held
    assert holder.held_bytes == 0
    holder.held_bytes = HELD_BYTES - (89 + HELD_ENTRY) // 2  # nearly full
    effects = holder.handle(Received(alice, Events((sk,), held=((sk.id, carol, blob),))),
                            c.now)
    assert sk.id not in holder.held or carol not in holder.held[sk.id]
    assert holder.held_bytes <= HELD_BYTES
    assert any("not holding" in getattr(e, "text", "") for e in effects)
    assert not [e for e in effects if isinstance(e, Send) and e.peer == carol
                and isinstance(e.payload, Events) and e.payload.copies]
