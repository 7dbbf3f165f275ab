"""The relay's role in the member core: designated in the membership, it stores and
forwards but cannot read, post or be handed keys; server-side fanout through it; the
Mailbox case (a member that meets only the relay gets what it missed, readable)."""

from __future__ import annotations

import pytest

from node.crypto.keys import IdentityKey
from node.group import commands as C
from node.group.bodies import Add, Relay, Rename, Role, decode_body, encode_body
from node.group.events import Kind
from node.group.member import Member
from node.group.member_io import Events, PeerUp, Received, Refused, Send, SendMany, Tick
from node.group.membership import AuthorizationError, Membership, authorize
from node.group.relaying import RELAY_REFUSAL
from node.group.state import GroupCore, Rejected
from node.ids import PeerId
from tests.group.cluster import Cluster
from tests.group.relay_cluster import RelayCluster, events_sent, messages


def test_relay_body_round_trip() -> None:
    peer = PeerId(bytes(range(32)))
    for on in (True, False):
        body = Relay(peer, on)
        assert decode_body(Kind.RELAY, encode_body(body)) == body
    # the worked example of docs/protocol.md section 18
    example = Relay(PeerId(bytes(range(32))), True)
    assert encode_body(example).hex() == (
        "82a470656572c420" + bytes(range(32)).hex() + "a26f6ec3")
    with pytest.raises(Exception, match="unknown keys"):
        decode_body(Kind.RELAY, b"\x83\xa4peer\xc4\x20" + bytes(32) + b"\xa2on\xc3\xa1x\x01")


def _state(members: dict[PeerId, Role], relays: set[PeerId] = frozenset()) -> Membership:
    state = Membership(created=True, members=dict(members))
    state.relays = set(relays)
    return state


def test_who_may_designate_whom() -> None:
    owner, admin, member, relay = (PeerId(bytes([i]) * 32) for i in range(1, 5))
    state = _state({owner: Role.OWNER, admin: Role.ADMIN, member: Role.MEMBER})
    authorize(state, admin, Kind.RELAY, Relay(relay, True))
    with pytest.raises(AuthorizationError, match="only owner and admins"):
        authorize(state, member, Kind.RELAY, Relay(relay, True))
    with pytest.raises(AuthorizationError, match="member cannot be a relay"):
        authorize(state, owner, Kind.RELAY, Relay(member, True))
    with pytest.raises(AuthorizationError, match="not a relay"):
        authorize(state, owner, Kind.RELAY, Relay(relay, False))
    designated = _state(dict(state.members), {relay})
    with pytest.raises(AuthorizationError, match="already a relay"):
        authorize(designated, owner, Kind.RELAY, Relay(relay, True))
    with pytest.raises(AuthorizationError, match="is a relay"):
        authorize(designated, owner, Kind.ADD, Add(relay, Role.MEMBER, ""))
    with pytest.raises(AuthorizationError, match="not a member"):
        authorize(designated, relay, Kind.MESSAGE, None)


def test_concurrent_add_and_designation_first_in_order_wins() -> None:
    c = Cluster(4, seed=3)
    owner, admin, _, peer = c.ids
    c.do(owner, C.AddMember(admin, Role.ADMIN))
    c.connect_all([owner, admin])
    c.settle()
    c.disconnect(owner, admin)
    c.do(owner, C.AuthorBody(Relay(peer, True)))
    c.do(admin, C.AddMember(peer, Role.MEMBER))
    c.connect(owner, admin)
    c.settle()
    states = [c.members[p].core.state for p in (owner, admin)]
    assert states[0].members == states[1].members and states[0].relays == states[1].relays
    assert (peer in states[0].relays) != (peer in states[0].members)  # exactly one won


@pytest.mark.parametrize("mode", ["private", "pairwise"])
def test_relay_holds_the_log_but_reads_nothing_and_gets_no_keys(mode: str) -> None:
    c = RelayCluster(4, mode, seed=1)
    c.connect_all()
    c.settle()
    for k, peer in enumerate(c.member_ids):
        c.do(peer, C.SendText(f"hello {k}"))
        c.settle()
    relay, owner = c.relay, c.members[c.ids[0]]
    assert c.order(c.relay_id) == c.order(c.ids[0])
    assert relay.designated and c.relay_id not in relay.core.state.members
    assert messages(c, c.relay_id) == [None, None, None]
    assert not relay.contents and not relay.keys.peers and relay.keys.own is None
    assert not relay.copies  # nothing addressed to it
    for peer in c.member_ids:
        m = c.members[peer]
        assert messages(c, peer) == ["hello 0", "hello 1", "hello 2"]
        assert all(c.relay_id not in copies for copies in m.own_copies.values())
        if m.keys.own is not None:
            assert c.relay_id not in m.keys.own.recipients
    for event in owner.core.ordered():
        if event.kind is Kind.HISTORY:
            assert decode_body(Kind.HISTORY, event.body).member != c.relay_id  # type: ignore[union-attr]
    assert not any(key[1] == c.relay_id for key in c.disks[c.ids[0]].copies)


def test_relay_cannot_post_and_members_reject_its_events() -> None:
    c = RelayCluster(3, seed=2)
    c.connect_all()
    c.settle()
    effects = c.relay.handle(C.SendText("hi"), c.now)
    assert effects == [Refused(RELAY_REFUSAL)]
    # a node's periodic chores are no command of the user's: nothing, not a refusal
    assert c.relay.handle(C.ExpireMutes(), c.now) == []
    assert c.relay.handle(C.MarkRead(), c.now) == []
    assert isinstance(c.relay.handle(C.AuthorBody(Rename("x")), c.now)[0], Refused)
    # a forged attempt: the relay signs an event with its own identity key
    core = c.relay.core
    unsigned = core.next_event(c.relay_id, 0, Kind.RENAME, encode_body(Rename("pwned")))
    key: IdentityKey = c.keys[-1]
    forged = unsigned.signed(key.sign(unsigned.signing_bytes()))
    for peer in c.member_ids:
        before = c.order(peer)
        c.handle(peer, Received(c.relay_id, Events((forged,))))
        assert c.order(peer) == before
        assert c.members[peer].core.state.name == "test"
    probe = GroupCore(c.group)
    for event in c.members[c.ids[0]].core.ordered():
        probe.receive(event)
    assert any(isinstance(e, Rejected) and "not a member" in e.reason
               for e in probe.receive(forged))


def test_undesignated_relay_receives_nothing_new() -> None:
    c = RelayCluster(3, seed=4)
    c.connect_all()
    c.settle()
    c.do(c.ids[1], C.SendText("before"))
    c.settle()
    assert len(c.order(c.relay_id)) == len(c.order(c.ids[0]))
    c.do(c.ids[0], C.AuthorBody(Relay(c.relay_id, False)))
    c.settle()
    assert not c.relay.designated and c.disks[c.relay_id].left
    held = len(c.order(c.relay_id))
    for peer in c.member_ids:
        effects = c.members[peer].handle(C.SendText("after"), c.now)
        assert not events_sent(effects, c.relay_id)
        c.run(peer, effects)
    c.settle()
    for peer in c.ids:  # a new channel and the periodic beat: still nothing
        c.handle(peer, PeerUp(c.relay_id) if peer != c.relay_id else PeerUp(c.ids[0]))
    c.settle()
    assert len(c.order(c.relay_id)) == held
    assert messages(c, c.member_ids[-1])[-2:] == ["after", "after"]


@pytest.mark.parametrize("mode", ["private", "pairwise"])
def test_server_side_fanout_one_copy_to_the_relay(mode: str) -> None:
    c = RelayCluster(5, mode, seed=5, fanout="relay")
    c.connect_all()
    c.settle()
    c.do(c.ids[1], C.SendText("warm up"))  # (a private group's first message rotates)
    c.settle()
    author = c.ids[1]
    effects = c.members[author].handle(C.SendText("via relay"), c.now)
    sends = [e for e in effects if isinstance(e, Send | SendMany)]
    assert len(sends) == 1 and isinstance(sends[0], Send) and sends[0].peer == c.relay_id
    payload = sends[0].payload
    assert isinstance(payload, Events) and payload.fanout
    if mode == "pairwise":  # every recipient's copy, addressed by recipient
        assert {r for _, r, _ in payload.held} == set(c.member_ids) - {author}
    c.run(author, effects)
    c.settle()
    for peer in c.member_ids:
        assert messages(c, peer)[-1] == "via relay"
    assert c.relay.fanned >= 1
    # the members acknowledge it to its author too: it shows delivered to each
    sent = c.members[author].core.ordered()[-1]
    assert messages(c, author)[-1] == "via relay"
    for peer in c.member_ids:
        if peer != author:
            assert c.members[author].has(peer, sent), "not delivered to a member"


def test_relay_fanout_falls_back_to_client_side() -> None:
    c = RelayCluster(4, seed=6, fanout="relay")
    c.connect_all(c.member_ids)
    c.settle()
    effects = c.members[c.ids[1]].handle(C.SendText("direct"), c.now)
    assert {p for e in effects if isinstance(e, SendMany) for p in e.peers} | {
        e.peer for e in effects if isinstance(e, Send)} >= {c.ids[0], c.ids[2]}
    c.run(c.ids[1], effects)
    c.settle()
    assert messages(c, c.ids[2])[-1] == "direct"


@pytest.mark.parametrize("mode", ["private", "pairwise"])
@pytest.mark.parametrize("restart", [False, True])
def test_mailbox_member_meets_only_the_relay(mode: str, restart: bool) -> None:
    """A sends while B is offline, A goes offline, B comes back connected only to the
    relay: B gets the messages, in order, and reads them."""
    c = RelayCluster(3, mode, seed=7)
    a, b, r = c.ids
    c.connect_all()
    c.settle()
    c.partition([a, r], [b])
    for k in range(3):
        c.do(a, C.SendText(f"while away {k}"))
    c.settle()
    c.partition([a], [b, r])  # a offline; b meets only the relay
    if restart:
        c.restart_relay()
    c.connect(b, r)
    c.settle()
    assert messages(c, b)[-3:] == [f"while away {k}" for k in range(3)]
    assert c.order(b) == c.order(a)


def test_budget_refuses_events_and_keeps_serving() -> None:
    c = RelayCluster(3, seed=8, budget=3000)
    c.connect_all()
    c.settle()
    for k in range(20):
        c.do(c.ids[1], C.SendText(f"m{k}" * 20))
        c.settle()
    relay = c.relay
    assert relay.refused_events > 0 and relay.stored_bytes() <= 3000
    assert any("budget" in w.text for w in c.warnings[c.relay_id])
    assert messages(c, c.ids[0])[-1] == "m19" * 20  # the members did not need it


def test_budget_forgets_copies_before_refusing_events() -> None:
    c = RelayCluster(3, "pairwise", seed=11, budget=4000)
    a, b, r = c.ids
    c.connect_all()
    c.settle()
    c.partition([a, r], [b])  # b away: the relay holds b's copy of each message
    c.do(a, C.SendText("first, held for b"))
    c.settle()
    first = c.members[a].core.ordered()[-1].id
    assert b in c.relay.held.get(first, {})
    for k in range(15):
        c.do(a, C.SendText(f"more {k}" * 20))
        c.settle()
    relay = c.relay
    assert relay.refused_events == 0 or relay.held_bytes == 0  # copies went first
    assert first not in relay.held  # forgotten for room...
    assert relay.core.get(first) is not None  # ...while the event stays
    assert relay.stored_bytes() <= 4000


def test_held_copies_expire() -> None:
    c = RelayCluster(3, "pairwise", seed=9)
    a, b, r = c.ids
    c.connect_all()
    c.settle()
    c.partition([a, r], [b])
    c.do(a, C.SendText("kept for b"))
    c.settle()
    assert any(b in h for h in c.relay.held.values())
    c.now += c.relay.expiry + 1
    c.handle(r, Tick())
    assert not any(b in h for h in c.relay.held.values())


def test_relay_keeps_serving_after_garbage_inputs() -> None:
    c = RelayCluster(3, seed=10)
    c.connect_all()
    c.settle()
    other = Member.found(IdentityKey(bytes(32)), c.rng.randbytes, c.now, "other")[1]
    stranger_events = tuple(e.event for e in other if hasattr(e, "event"))
    c.handle(c.relay_id, Received(c.ids[0], Events(stranger_events)))  # another group
    c.handle(c.relay_id, Received(PeerId(bytes(32)), Events(stranger_events, fanout=True)))
    errors = [w for w in c.warnings[c.relay_id] if w.level >= 40]
    assert not errors
    c.do(c.ids[1], C.SendText("still here"))
    c.settle()
    assert len(c.order(c.relay_id)) == len(c.order(c.ids[0]))


def test_copies_too_big_for_one_relay_message_fan_out_client_side() -> None:
    """A pairwise message whose copies do not fit one message to the relay goes out
    client-side (and the relay gets what fits, to hold)."""
    c = RelayCluster(42, "pairwise", seed=12, fanout="relay")
    c.connect_all()
    c.settle()
    author = c.ids[1]
    effects = c.members[author].handle(C.SendText("x" * 16000), c.now)
    to_relay = [e for e in effects if isinstance(e, Send) and e.peer == c.relay_id]
    assert len(to_relay) == 1 and isinstance(to_relay[0].payload, Events)
    assert not to_relay[0].payload.fanout
    assert 0 < len(to_relay[0].payload.held) < 40
    direct = {e.peer for e in effects if isinstance(e, Send)} - {c.relay_id}
    assert direct == set(c.member_ids) - {author}
    c.run(author, effects)
    c.settle()
    assert messages(c, c.ids[-2])[-1] == "x" * 16000
