"""A member core under hostile input: what it returns, what it keeps, and that the group
goes on (the protocol half of ``tests/integration/test_groups_bad_input.py``).

Alice (the owner, the victim), bob and mallory are ``Member`` cores in a ``Cluster``.
Mallory's own core is her honest face; what she forges is built by hand from a copy of
a core (``forge``) and fed straight to alice (``feed``), so each test reads the effects
alice returns for that one input: the ``Warn`` with its reason, whether a ``SaveEvent``
or a ``SaveEquivocation`` is among them, and which ids the ``Ack`` to mallory carries.
After the bad input, the honest members must still converge and read each other.

Wire bytes, the unknown-group buffer and SQLite stay in the integration file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import nacl.signing
import pytest

from node.crypto import sender_keys
from node.crypto.sender_keys import MAX_JUMP, OwnSenderKey
from node.group import commands as C
from node.group import keys as K
from node.group.bodies import (
    Add,
    Body,
    PrivateMessage,
    Remove,
    Role,
    SenderKey,
    SetRole,
    encode_body,
    kind_of,
)
from node.group.delivery import ACK_DELAY
from node.group.events import (
    MAX_CLOCK_ENTRIES,
    MAX_COUNTER,
    Event,
    EventError,
    EventId,
    GroupId,
    Kind,
    UnsignedEvent,
    decode_event,
)
from node.group.member_io import (
    Ack,
    Announce,
    Effect,
    Events,
    Got,
    Received,
    SaveDelivery,
    SaveEquivocation,
    SaveEvent,
    Send,
    Tick,
    Warn,
)
from node.group.state import MAX_BUFFER, MAX_BUFFER_PER_AUTHOR, GroupCore
from node.ids import PeerId, short_id
from node.testing.groups import Replica
from node.wire.messages import MAX_EVENTS
from tests.group.cluster import Cluster

Signer = Callable[[bytes], bytes]

# -- the scene -----------------------------------------------------------------------------


def scene(mallory_role: Role | None = Role.MEMBER) -> tuple[Cluster, PeerId, PeerId, PeerId]:
    """Alice founds, adds bob (and mallory, unless ``None``); alice and bob have spoken.

    Everyone is connected and settled, so alice and bob each hold a sender key that
    every member has.
    """
    c = Cluster(3)
    alice, bob, mallory = c.ids
    c.do(alice, C.AddMember(bob))
    if mallory_role is not None:
        c.do(alice, C.AddMember(mallory, mallory_role))
    c.connect_all()
    c.settle()
    c.do(alice, C.SendText("alice: before"))
    c.do(bob, C.SendText("bob: before"))
    c.settle()
    assert c.members[alice].texts == c.members[bob].texts
    return c, alice, bob, mallory


def feed(c: Cluster, to: PeerId, sender: PeerId, *events: Event) -> list[Effect]:
    """``to`` handles one Events message from ``sender``, then the tick when what it owes
    for it is acknowledged; their effects are run and returned."""
    effects = c.members[to].handle(Received(sender, Events(tuple(events))), c.now)
    c.run(to, effects)
    tick = c.members[to].handle(Tick(), c.now + ACK_DELAY)
    c.run(to, tick)
    return effects + tick


def forge(core: GroupCore, author: PeerId, body: Body, sign: Signer, **fields: object) -> Event:
    """``author``'s next event as ``core`` sees the group, with ``fields`` overridden and
    signed by ``sign`` (never delivered anywhere)."""
    unsigned = core.next_event(author, 0, kind_of(body), encode_body(body))
    unsigned = replace(unsigned, **fields)  # type: ignore[arg-type]
    return unsigned.signed(sign(unsigned.signing_bytes()))


def identity(c: Cluster, peer: PeerId) -> Signer:
    return c.keys[c.ids.index(peer)].sign


def sender_key(c: Cluster, peer: PeerId) -> Signer:
    own = c.members[peer].keys.own
    assert own is not None, "speak first: no sender key yet"
    return own.key.sign


def stranger() -> Signer:
    key = nacl.signing.SigningKey.generate()
    return lambda message: bytes(key.sign(message).signature)


def zeros(message: bytes) -> bytes:
    return bytes(64)


def ciphertext(c: Cluster) -> PrivateMessage:
    return PrivateMessage(0, c.rng.randbytes(64))


# -- reading effects -----------------------------------------------------------------------


def warnings(effects: list[Effect], level: int = logging.WARNING) -> list[str]:
    return [e.text for e in effects if isinstance(e, Warn) and e.level >= level]


def rejected(event: Event, reason: str) -> str:
    return (f"group test: rejected event {event.id.hex()[:12]} from "
            f"{short_id(event.author)}: {reason}")


def saved(effects: list[Effect]) -> list[EventId]:
    return [e.event.id for e in effects if isinstance(e, SaveEvent)]


def acks(effects: list[Effect], peer: PeerId) -> list[dict[PeerId, int]]:
    """The acknowledgements ``effects`` send ``peer`` (per-id ones as well as cumulative,
    not its "unread" reports), as author -> the seq it holds every event up to."""
    out: list[dict[PeerId, int]] = []
    for e in effects:
        if isinstance(e, Send) and e.peer == peer and isinstance(e.payload, Got):
            out.append(dict(e.payload.upto))
        elif (isinstance(e, Send) and e.peer == peer and isinstance(e.payload, Ack)
              and e.payload.kind == "ack"):
            raise AssertionError(f"a per-id ack of a live message: {e.payload}")
    return out


def covers(ack: dict[PeerId, int], events: Sequence[Event]) -> bool:
    """Does the cumulative ``ack`` say every one of ``events`` is stored?"""
    return all(ack.get(e.author, 0) >= e.seq for e in events)


def equivocations(effects: list[Effect]) -> list[SaveEquivocation]:
    return [e for e in effects if isinstance(e, SaveEquivocation)]


def messages(c: Cluster, peer: PeerId) -> list[str | None]:
    """The texts of the posts ``peer`` shows, in order (withdrawn and muted ones left out)."""
    member = c.members[peer]
    return [member.texts.get(event_id) for event_id in member.conversation().threads]


def still_talking(c: Cluster, *peers: PeerId) -> None:
    """After anti-entropy, ``peers`` hold the same events in the same order, and each
    reads a new message from every other."""
    for p in peers:
        c.handle(p, Announce())
    c.settle()
    said = [c.do(p, C.SendText(f"after, from {p.hex()[:6]}")) for p in peers]
    c.settle()
    first = c.order(peers[0])
    assert all(e.id in first for e in said)
    for p in peers:
        assert c.order(p) == first
        assert [c.members[p].texts.get(e.id) for e in said] == [
            f"after, from {q.hex()[:6]}" for q in peers]


def mallorys(c: Cluster, mallory: PeerId, kind: Kind) -> list[Event]:
    return [e for e in c.members[mallory].core.ordered() if e.author == mallory and e.kind is kind]


# -- 1. forged signatures ------------------------------------------------------------------


def test_forged_signature_as_another_member() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    # "bob's" next message, signed by mallory's identity key instead of bob's sender key
    as_bob = forge(victim.core.copy(), bob, ciphertext(c), identity(c, mallory))
    assert as_bob.seq == victim.core.frontier[bob] + 1
    effects = feed(c, alice, mallory, as_bob)
    assert warnings(effects) == [rejected(as_bob, "bad signature")]
    assert saved(effects) == [] and acks(effects, mallory) == []
    # mallory's own SENDER_KEY, signed by some other key
    wrong = forge(victim.core.copy(), mallory, SenderKey(0, bytes(32), ()), stranger())
    effects = feed(c, alice, mallory, wrong)
    assert warnings(effects) == [rejected(wrong, "bad signature")]
    assert saved(effects) == [] and acks(effects, mallory) == []
    assert victim.rejected == 2 and victim.core.buffered() == {}
    # bob's real event for that very seq is accepted: nothing was held against him
    real = c.do(bob, C.SendText("bob: my real event"))
    assert real.seq == as_bob.seq
    c.settle()
    assert victim.texts[real.id] == "bob: my real event"
    assert c.disks[alice].equivocations == 0
    still_talking(c, alice, bob, mallory)


# -- 2. non-members, removed members, guests -----------------------------------------------


def test_event_from_a_non_member() -> None:
    c, alice, bob, mallory = scene(mallory_role=None)  # connected, knows the history
    victim = c.members[alice]
    distribution, _ = K.distribution(OwnSenderKey.generate(c.rng.randbytes), 0,
                                     frozenset((alice, bob)), c.rng.randbytes)
    key_event = forge(victim.core.copy(), mallory, distribution, identity(c, mallory))
    effects = feed(c, alice, mallory, key_event)
    assert warnings(effects) == [rejected(key_event, "author is not a member")]
    assert saved(effects) == [] and acks(effects, mallory) == []
    assert mallory not in victim.core.state.members and victim.rejected == 1
    still_talking(c, alice, bob)


def test_events_from_a_removed_member() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    while_member = c.do(mallory, C.SendText("while a member"))
    c.settle()
    assert victim.texts[while_member.id] == "while a member"
    assert victim.keys.own is not None and mallory in victim.keys.own.recipients

    c.partition([alice, bob], [mallory])
    removal = c.do(alice, C.RemoveMember(mallory))
    # made before she saw her removal (concurrent with it): stored, but withdrawn
    backdated = c.do(mallory, C.SendText("backdated"))
    effects = feed(c, alice, mallory, backdated)
    assert saved(effects) == [backdated.id] and warnings(effects) == []
    assert victim.core.is_withdrawn(mallory, backdated.seq)
    # made after it: rejected
    feed(c, mallory, alice, removal)
    assert mallory not in c.members[mallory].core.state.members
    late = forge(c.members[mallory].core.copy(), mallory, PrivateMessage(1, c.rng.randbytes(64)),
                 sender_key(c, mallory))
    effects = feed(c, alice, mallory, late)
    assert warnings(effects) == [rejected(late, "author is not a member")]
    assert saved(effects) == []
    shown = messages(c, alice)
    assert "while a member" in shown and "backdated" not in shown
    still_talking(c, alice, bob)
    # alice's new messages went out under a new sender key that mallory never got
    assert victim.keys.own is not None and victim.keys.own.epoch == 1
    assert mallory not in victim.keys.own.recipients


def test_message_from_a_guest() -> None:
    c, alice, bob, mallory = scene(mallory_role=Role.GUEST)
    victim = c.members[alice]
    assert victim.core.state.role(mallory) is Role.GUEST
    distribution, _ = K.distribution(OwnSenderKey.generate(c.rng.randbytes), 0,
                                     frozenset((alice, bob)), c.rng.randbytes)
    key_event = forge(victim.core.copy(), mallory, distribution, identity(c, mallory))
    effects = feed(c, alice, mallory, key_event)
    assert warnings(effects) == [rejected(key_event, "guests cannot post")]
    assert saved(effects) == [] and acks(effects, mallory) == []
    still_talking(c, alice, bob)


# -- 3. claiming a role one does not have --------------------------------------------------


def test_member_claiming_admin_powers() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    claims: list[tuple[Body, str]] = [
        (Remove(bob), "only owner and admins may remove"),
        (SetRole(mallory, Role.ADMIN), "only owner and admins may set role"),
        (Add(PeerId(c.rng.randbytes(32)), Role.ADMIN, "sock puppet"),
         "cannot give a role above one's own"),
    ]
    seqs = set()
    for body, reason in claims:
        event = forge(c.members[mallory].core.copy(), mallory, body, identity(c, mallory))
        seqs.add(event.seq)  # each one at the same, still free, seq
        effects = feed(c, alice, mallory, event)
        assert warnings(effects) == [rejected(event, reason)]
        assert saved(effects) == [] and equivocations(effects) == []
    assert len(seqs) == 1 and victim.rejected == len(claims)
    assert victim.core.state.members == {alice: Role.OWNER, bob: Role.MEMBER,
                                         mallory: Role.MEMBER}
    still_talking(c, alice, bob, mallory)  # her own next event takes that seq


# -- 4. replays ----------------------------------------------------------------------------


def test_replayed_events_are_acked_again_and_stored_once() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    said = c.do(mallory, C.SendText("once"))
    [key_event] = mallorys(c, mallory, Kind.SENDER_KEY)
    c.settle()
    stored = len(c.disks[alice].events)
    history = victim.core.ordered()  # everybody's events, replayed by her
    assert said in history and key_event in history and len(history) <= MAX_EVENTS
    replays = [(said,), (said, key_event), (said,) * MAX_EVENTS, tuple(history)]
    for replay in replays:
        effects = feed(c, alice, mallory, *replay)
        [ack] = acks(effects, mallory)
        assert covers(ack, replay)
        assert saved(effects) == [] and warnings(effects, logging.DEBUG) == []  # no storm
    assert len(c.disks[alice].events) == stored
    assert messages(c, alice).count("once") == 1
    assert (victim.rejected, victim.dropped) == (0, 0)
    still_talking(c, alice, bob, mallory)


# -- 5. sender keys: a future epoch, a huge index ------------------------------------------


def test_message_from_a_future_epoch() -> None:
    c, alice, bob, mallory = scene()
    c.do(mallory, C.SendText("she has a sender key for epoch 0"))
    c.settle()
    future = forge(c.members[mallory].core.copy(), mallory, ciphertext(c), stranger(), epoch=7)
    effects = feed(c, alice, mallory, future)
    assert warnings(effects) == [rejected(future, "no sender key of its author for epoch 7")]
    assert saved(effects) == [] and acks(effects, mallory) == []
    assert c.members[alice].core.buffered() == {}
    still_talking(c, alice, bob, mallory)


def test_message_with_a_huge_index(monkeypatch: pytest.MonkeyPatch) -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    first = c.do(mallory, C.SendText("index 0"))
    c.settle()
    assert victim.texts[first.id] == "index 0"

    derivations: list[str] = []

    def counted(name: str) -> Callable[[bytes], bytes]:
        real: Callable[[bytes], bytes] = getattr(sender_keys, name)

        def derive(ck: bytes) -> bytes:
            derivations.append(name)
            return real(ck)

        return derive

    for name in ("next_chain_key", "message_key"):
        monkeypatch.setattr(sender_keys, name, counted(name))
    index = 1 + MAX_JUMP + 1  # alice's chain for mallory is at 1
    # properly signed by her sender key: it passes the log, only decryption refuses
    huge = forge(c.members[mallory].core.copy(), mallory,
                 PrivateMessage(index, c.rng.randbytes(64)), sender_key(c, mallory))
    effects = feed(c, alice, mallory, huge)
    assert warnings(effects) == [
        f"group test: cannot decrypt {huge.id.hex()[:12]} from {short_id(mallory)}: "
        f"group message index {index} is {MAX_JUMP + 1} ahead of 1, "
        f"more than the {MAX_JUMP} allowed"]
    assert derivations == []  # refused before any hashing
    assert saved(effects) == [huge.id]  # valid
    [ack] = acks(effects, mallory)
    assert ack == {mallory: huge.seq}
    assert victim.texts[huge.id] is None and huge.id not in victim.contents
    # her core and bob's take it too, as her authoring and fanout would have done
    c.members[mallory].core.receive(huge)
    feed(c, bob, mallory, huge)
    # her chain on alice was not advanced: her next real message (index 1) still reads
    second = c.do(mallory, C.SendText("index 1"))
    derivations.clear()  # (her own encryption)
    feed(c, alice, mallory, second)
    assert victim.texts[second.id] == "index 1"
    assert derivations == ["message_key", "next_chain_key"]  # one step: the count counts
    monkeypatch.undo()
    c.settle()
    still_talking(c, alice, bob, mallory)


# -- 6. clocks: absurd, or naming events that do not exist ---------------------------------


def fake_peers(n: int) -> tuple[tuple[PeerId, int], ...]:
    return tuple((PeerId(b"\x00" + i.to_bytes(31, "big")), 1) for i in range(n))


CLOCK_CASES: dict[str, tuple[dict[str, object], str]] = {
    "513 entries": ({"clock": fake_peers(MAX_CLOCK_ENTRIES + 1)},
                    "clock delta of 513 entries exceeds 512"),
    "2000 entries": ({"clock": fake_peers(2000)}, "clock delta of 2000 entries exceeds 512"),
    "clock seq 2^40": ({"clock": ((fake_peers(1)[0][0], MAX_COUNTER),)},
                       r"clock seq must be an integer in 1\.\.2\^40"),
    "seq 2^40": ({"seq": MAX_COUNTER}, r"seq must be an integer in 1\.\.2\^40"),
    "lamport 2^64-1": ({"lamport": 2**64 - 1}, r"lamport must be an integer in 1\.\.2\^40"),
}


@pytest.mark.parametrize("case", CLOCK_CASES.values(), ids=list(CLOCK_CASES))
def test_a_members_signed_event_with_an_absurd_clock(
    case: tuple[dict[str, object], str],
) -> None:
    """Validly signed by a member, so only the decoder stands between it and the log: it
    refuses the bytes. Handed the event anyway (as a simulator could), the core neither
    raises, nor stores, nor acknowledges it."""
    fields, reason = case
    c, alice, bob, mallory = scene()
    c.do(mallory, C.SendText("she has a sender key"))
    c.settle()
    bad = forge(c.members[mallory].core.copy(), mallory, ciphertext(c), sender_key(c, mallory),
                **fields)
    with pytest.raises(EventError, match=reason):
        decode_event(bad.raw)
    effects = feed(c, alice, mallory, bad)
    assert warnings(effects, logging.ERROR) == []  # not dropped on an exception
    assert saved(effects) == [] and acks(effects, mallory) == []
    still_talking(c, alice, bob)  # (not mallory: what she signed for her next seq is used)


def waiting_event(c: Cluster, mallory: PeerId, bob: PeerId) -> Event:
    """Mallory's valid, signed message that depends on bob's event 10^6: it waits."""
    c.do(mallory, C.SendText("she has a sender key"))
    c.settle()
    return forge(c.members[mallory].core.copy(), mallory, ciphertext(c), sender_key(c, mallory),
                 clock=((bob, 10**6),), lamport=10**6 + 100)


def test_clock_naming_events_that_do_not_exist_waits_bounded() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    waits = waiting_event(c, mallory, bob)
    effects = feed(c, alice, mallory, waits)
    assert saved(effects) == [] and acks(effects, mallory) == [] and warnings(effects) == []
    assert victim.core.buffered() == {mallory: [waits.seq]}
    assert victim.core.gaps() == {bob: 10**6 - victim.core.frontier[bob]}
    still_talking(c, alice, bob)
    assert victim.core.buffered() == {mallory: [waits.seq]}  # still waiting, alone
    assert victim.core.waiting() == [waits]


def test_a_replay_of_an_event_still_waiting_is_not_acked() -> None:
    c, alice, bob, mallory = scene()
    waits = waiting_event(c, mallory, bob)
    feed(c, alice, mallory, waits)
    effects = feed(c, alice, mallory, waits, waits)
    assert saved(effects) == [] and acks(effects, mallory) == [] and warnings(effects) == []
    assert c.members[alice].core.waiting() == [waits]
    # the control: a replay of a delivered event is acked
    [mine] = mallorys(c, mallory, Kind.MESSAGE)
    [ack] = acks(feed(c, alice, mallory, waits, mine), mallory)
    assert covers(ack, [mine]) and not covers(ack, [waits])


# -- 7. the causal buffer: a gap that never fills, junk from made-up authors ---------------


def chunks(events: list[Event], size: int = MAX_EVENTS) -> Iterator[tuple[Event, ...]]:
    for start in range(0, len(events), size):
        yield tuple(events[start:start + size])


def test_a_gap_that_never_fills_keeps_the_buffer_bounded() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    replica = Replica(c.keys[2], c.group)  # mallory, authoring outside her core
    replica.receive(*victim.core.ordered())
    withheld = replica.new_sender_key()  # not sent: everything after it waits
    events = [replica.say(f"w{i}") for i in range(2000)]
    drops: list[str] = []
    for batch in chunks(events):
        effects = feed(c, alice, mallory, *batch)
        assert saved(effects) == [] and acks(effects, mallory) == []
        drops += warnings(effects, logging.INFO)
    assert victim.core.buffered() == {
        mallory: [withheld.seq + 1 + i for i in range(MAX_BUFFER_PER_AUTHOR)]}
    # one line per message (not per event), adding up to every event that did not fit
    prefix = "group test: dropped "
    suffix = f" event(s) from {short_id(mallory)}: too many events waiting for their causal past"
    assert drops and all(d.startswith(prefix) and d.endswith(suffix) for d in drops), drops
    counts = [int(d.removeprefix(prefix).removesuffix(suffix)) for d in drops]
    assert sum(counts) == victim.dropped == len(events) - MAX_BUFFER_PER_AUTHOR
    assert len(drops) == len(list(chunks(events))) - 1  # the first one fit
    # the withheld key releases exactly what waited, in order
    effects = feed(c, alice, mallory, withheld)
    released = [withheld.id, *(e.id for e in events[:MAX_BUFFER_PER_AUTHOR])]
    assert saved(effects) == released
    [ack] = acks(effects, mallory)
    assert ack == {mallory: events[MAX_BUFFER_PER_AUTHOR - 1].seq}  # all of it, in one
    assert victim.core.buffered() == {}
    still_talking(c, alice, bob)


def junk(group: GroupId, authors: int) -> list[Event]:
    """Private messages of made-up authors: unverifiable before their (never coming)
    SENDER_KEY, so each is let into the buffer."""
    out = []
    for i in range(authors):
        author = PeerId(bytes([0xF0]) + i.to_bytes(31, "big"))
        for seq in range(2, 2 + MAX_BUFFER_PER_AUTHOR):
            out.append(UnsignedEvent(group, author, seq, 0, (), 9, Kind.MESSAGE,
                                     b"").signed(bytes(64)))
    return out


def test_junk_from_made_up_authors_cannot_stop_the_group() -> None:
    c, alice, bob, mallory = scene(mallory_role=None)  # she needs no membership
    victim = c.members[alice]
    authors = MAX_BUFFER // MAX_BUFFER_PER_AUTHOR + 1
    drops: list[str] = []
    for batch in chunks(junk(c.group, authors), MAX_BUFFER_PER_AUTHOR):
        effects = feed(c, alice, mallory, *batch)
        assert saved(effects) == [] and acks(effects, mallory) == []
        drops += warnings(effects, logging.INFO)
    assert len(victim.core.waiting()) == MAX_BUFFER
    assert drops == [f"group test: dropped {MAX_BUFFER_PER_AUTHOR} event(s) from "
                     f"{short_id(mallory)}: too many events waiting for their causal past"]
    # bob's events arriving out of order must wait too: a stranger makes room for them
    c.partition([alice], [bob, mallory])
    said = [c.do(bob, C.SendText(f"bob: can alice still hear me? {i}")) for i in range(3)]
    for event in reversed(said[1:]):
        effects = feed(c, alice, bob, event)
        assert saved(effects) == [] and warnings(effects, logging.INFO) == []
    assert victim.core.buffered()[bob] == [e.seq for e in said[1:]]
    assert len(victim.core.waiting()) == MAX_BUFFER
    effects = feed(c, alice, bob, said[0])
    assert saved(effects) == [e.id for e in said]
    assert [victim.texts[e.id] for e in said] == [
        f"bob: can alice still hear me? {i}" for i in range(3)]
    c.connect_all()
    still_talking(c, alice, bob)


# -- 8. acks -------------------------------------------------------------------------------


def test_acks_for_events_that_do_not_exist_are_not_recorded() -> None:
    c, alice, bob, mallory = scene(mallory_role=None)  # not even a member
    victim = c.members[alice]
    before = {k: dict(v) for k, v in victim.acked.items()}
    sessions = dict(victim.sessions)
    assert before  # bob acked alice's events: there is something to compare with
    for _ in range(8):
        ids = tuple(EventId(c.rng.randbytes(32)) for _ in range(MAX_EVENTS))
        effects = victim.handle(Received(mallory, Ack(ids)), c.now)
        c.run(alice, effects)
        assert not [e for e in effects if isinstance(e, SaveDelivery)]
    assert victim.acked == before and victim.sessions == sessions
    still_talking(c, alice, bob)


def test_a_strangers_ack_of_our_events_is_not_recorded() -> None:
    """Regression: an ack from anyone was recorded, so every made-up identity added a
    delivery row per event of ours, and views listed it among those delivered to."""
    c, alice, bob, mallory = scene(mallory_role=None)
    victim = c.members[alice]
    c.partition([alice, mallory], [bob])
    fresh = c.do(alice, C.SendText("not acked by anyone yet"))
    ours = tuple(e.id for e in victim.core.ordered() if e.author == alice)
    assert fresh.id in ours
    effects = victim.handle(Received(mallory, Ack(ours)), c.now)
    assert [e for e in effects if isinstance(e, SaveDelivery)] == []
    assert all(mallory not in victim.acked.get(i, {}) for i in ours)
    # the control: a member's ack of it is recorded
    effects = victim.handle(Received(bob, Ack((fresh.id,))), c.now)
    assert [e for e in effects if isinstance(e, SaveDelivery)] == [
        SaveDelivery(fresh.id, bob, c.now)]


# -- 9. equivocation -----------------------------------------------------------------------


def test_equivocation_is_rejected_and_recorded_once() -> None:
    c, alice, bob, mallory = scene()
    victim = c.members[alice]
    c.do(mallory, C.SendText("her sender key"))
    c.settle()
    twin = forge(c.members[mallory].core.copy(), mallory, ciphertext(c), sender_key(c, mallory))
    first = c.do(mallory, C.SendText("the first"))
    assert (twin.author, twin.seq) == (first.author, first.seq) and twin.id != first.id
    c.settle()
    assert victim.texts[first.id] == "the first"
    effects = feed(c, alice, mallory, twin)
    assert warnings(effects) == [
        f"group test: {short_id(mallory)} signed two different events with seq {first.seq} "
        "(equivocation); keeping the first"]
    assert equivocations(effects) == [
        SaveEquivocation(mallory, first.seq, first.id, twin.raw, c.now)]
    assert saved(effects) == [] and acks(effects, mallory) == []
    assert messages(c, alice).count("the first") == 1
    # the same equivocation again is neither recorded nor reported twice
    effects = feed(c, alice, mallory, twin)
    assert equivocations(effects) == [] and warnings(effects) == []
    assert c.disks[alice].equivocations == 1
    still_talking(c, alice, bob, mallory)


def bobs_next_as_forged_by_a_stranger(c: Cluster, bob: PeerId, **fields: object) -> Event:
    return forge(c.members[bob].core.copy(), bob, ciphertext(c), zeros,
                 clock=fake_peers(1), **fields)


def test_a_forgery_cannot_frame_a_member_as_an_equivocator() -> None:
    c, alice, bob, mallory = scene(mallory_role=None)  # she needs no membership
    victim = c.members[alice]
    # "bob's" next event, unsigned, with a dependency that never comes (it would wait)
    frame = bobs_next_as_forged_by_a_stranger(c, bob)
    effects = feed(c, alice, mallory, frame)
    assert warnings(effects) == [rejected(frame, "bad signature")]
    assert victim.core.buffered() == {}
    real = c.do(bob, C.SendText("bob: my real event for that seq"))
    assert real.seq == frame.seq
    c.settle()
    assert victim.core.get(real.id) == real
    assert c.disks[alice].equivocations == 0
    assert not [w for w in c.warnings[alice] if "equivocation" in w.text]
    still_talking(c, alice, bob)


def test_an_unverifiable_forgery_cannot_silence_a_member() -> None:
    c, alice, bob, mallory = scene(mallory_role=None)
    victim = c.members[alice]
    # "bob's" next event in an epoch nobody has a key for: it cannot be checked yet,
    # and with a dependency that never comes it would wait for ever
    frame = bobs_next_as_forged_by_a_stranger(c, bob, epoch=99)
    effects = feed(c, alice, mallory, frame)
    assert warnings(effects) == [] and saved(effects) == []
    assert victim.core.buffered() == {bob: [frame.seq]}
    real = c.do(bob, C.SendText("bob: my real event for that seq"))
    assert real.seq == frame.seq
    c.settle()
    assert victim.core.get(real.id) == real and victim.core.buffered() == {}
    assert victim.texts[real.id] == "bob: my real event for that seq"
    assert c.disks[alice].equivocations == 0
    still_talking(c, alice, bob)


def test_a_forged_copy_of_a_delivered_event_is_not_an_equivocation() -> None:
    c, alice, bob, mallory = scene(mallory_role=None)
    victim = c.members[alice]
    real = victim.core.get(victim.core.event_id(bob, victim.core.frontier[bob]))
    assert real is not None
    forged = replace(real.unsigned, body=encode_body(ciphertext(c))).signed(bytes(64))
    assert (forged.author, forged.seq) == (real.author, real.seq) and forged.id != real.id
    effects = feed(c, alice, mallory, forged)
    assert warnings(effects) == [rejected(forged, "bad signature")]
    assert equivocations(effects) == [] and saved(effects) == []
    assert c.disks[alice].equivocations == 0
    still_talking(c, alice, bob)
