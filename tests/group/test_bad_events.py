"""Bad events against the pure group core: strict decoding, body schemas, forged or
unauthorized events, clock limits, and what a hostile peer can do to the buffer.

``test_core.py`` covers the basic cases (a zeroed signature, a non-member or guest
posting, a member removing someone, a removed member posting, an unknown group, a
far-off Lamport number, one author's never-filling gap); this file covers the rest.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from dataclasses import replace
from typing import Any

import msgpack
import nacl.signing
import pytest

from node.crypto.keys import IdentityKey
from node.group.bodies import (
    HARD_MAX_MEMBERS,
    MAX_GROUP_NAME,
    Add,
    Ban,
    Body,
    Create,
    Leave,
    PairwiseMessage,
    PrivateMessage,
    Remove,
    Rename,
    Role,
    SenderKey,
    SetPolicy,
    SetRole,
    decode_body,
    encode_body,
    group_id_for,
    kind_of,
)
from node.group.events import (
    FORMAT,
    MAX_BODY_LEN,
    MAX_CLOCK_ENTRIES,
    MAX_COUNTER,
    MAX_EVENT_LEN,
    Event,
    EventError,
    GroupId,
    Kind,
    UnsignedEvent,
    decode_event,
)
from node.group.state import (
    Delivered,
    Dropped,
    Duplicate,
    Effect,
    Equivocation,
    GroupCore,
    MembershipChanged,
    Rejected,
)
from node.ids import PeerId
from node.testing.groups import Replica
from node.wire.strict import pack

OWNER, BOB, CAROL, MALLORY = (IdentityKey(bytes([0x40 + i]) * 32) for i in range(4))


# -- helpers ---------------------------------------------------------------------------


def founded(
    *members: tuple[IdentityKey, Role], mode: str = "private", **create: Any
) -> tuple[dict[PeerId, Replica], list[Event]]:
    """A group founded by OWNER with ``members`` added; every replica holds the history."""
    owner, first = Replica.founding(OWNER, mode=mode, **create)
    history = [first]
    for key, role in members:
        history.append(owner.author(Add(key.peer_id, Role.MEMBER, "")))
        if role is not Role.MEMBER:
            history.append(owner.author(SetRole(key.peer_id, role)))
    replicas = {OWNER.peer_id: owner}
    for key, _ in members:
        replica = Replica(key, owner.core.group_id)
        replica.receive(*history)
        replicas[key.peer_id] = replica
    return replicas, history


def observer(history: list[Event], **limits: int) -> GroupCore:
    """A fresh core (an honest member's view) that has delivered ``history``."""
    core = GroupCore(history[0].group, **limits)
    for event in history:
        core.receive(event)
    assert len(core.ordered()) == len(history)
    return core


def forge(
    replica: Replica,
    body: Body | bytes,
    *,
    kind: Kind | None = None,
    signer: nacl.signing.SigningKey | None = None,
    **fields: Any,
) -> Event:
    """The replica's next event with ``body``, signed but NOT delivered locally.

    ``fields`` override fields of the unsigned event (seq, epoch, clock, lamport,
    author, group); ``signer`` defaults to the replica's identity key.
    """
    if not isinstance(body, bytes):
        kind = kind or kind_of(body)
        body = encode_body(body)
    assert kind is not None
    unsigned = replica.core.next_event(replica.peer_id, replica.epoch, kind, body)
    unsigned = replace(unsigned, **fields)
    key = signer or replica.key.signing_key
    return unsigned.signed(bytes(key.sign(unsigned.signing_bytes()).signature))


def only(effects: list[Effect]) -> Effect:
    assert len(effects) == 1, effects
    return effects[0]


def rejected(effects: list[Effect], reason: str) -> None:
    effect = only(effects)
    assert isinstance(effect, Rejected), effect
    assert reason in effect.reason, effect.reason


def fields_of(event: Event) -> list[Any]:
    """The 10 encoded fields of an event, to be mutated and packed again."""
    u = event.unsigned
    return [FORMAT, u.group, u.author, u.seq, u.epoch, [[a, s] for a, s in u.clock],
            u.lamport, int(u.kind), u.body, event.signature]


def peer(i: int) -> PeerId:
    """Distinct, sorted-by-i fake peer ids (none equals a test key's id)."""
    return PeerId(b"\x00" + i.to_bytes(31, "big"))


@pytest.fixture(scope="module")
def sample() -> Event:
    """A valid, signed private message of BOB with a non-empty clock delta."""
    replicas, _ = founded((BOB, Role.MEMBER), (CAROL, Role.MEMBER))
    carol, bob = replicas[CAROL.peer_id], replicas[BOB.peer_id]
    bob.new_sender_key()
    carol.say("hi")
    bob.receive(*carol.core.ordered())
    event = bob.say("a reply")
    assert event.clock
    return event


# -- strict decoding: every field, every limit -------------------------------------------


def _set(index: int, value: Any) -> Any:
    def mutate(f: list[Any]) -> list[Any]:
        f[index] = value
        return f

    return mutate


def _clock(value: Any) -> Any:
    return _set(5, value)


FIELD_CASES: dict[str, tuple[Any, str]] = {
    "map instead of array": (
        lambda f: {str(i): v for i, v in enumerate(f)}, "an event is an array of 10 fields",
    ),
    "9 fields": (lambda f: f[:9], "an event is an array of 10 fields"),
    "11 fields": (lambda f: [*f, b""], "an event is an array of 10 fields"),
    "format 2": (_set(0, 2), "unknown event format 2"),
    "format as text": (_set(0, "1"), "unknown event format"),
    "group of 31 bytes": (_set(1, bytes(31)), "group must be 32 bytes"),
    "group as text": (_set(1, "g" * 32), "group must be 32 bytes"),
    "author of 33 bytes": (_set(2, bytes(33)), "author must be 32 bytes"),
    "seq 0": (_set(3, 0), "seq must be an integer in 1..2^40"),
    "seq negative": (_set(3, -1), "seq must be an integer"),
    "seq 2^40": (_set(3, MAX_COUNTER), "seq must be an integer"),
    "seq 2^64-1": (_set(3, 2**64 - 1), "seq must be an integer"),
    "seq true": (_set(3, True), "seq must be an integer"),
    "seq float": (_set(3, 1.0), "seq must be an integer"),
    "seq text": (_set(3, "1"), "seq must be an integer"),
    "epoch negative": (_set(4, -1), "epoch must be an integer in 0..2^40"),
    "epoch 2^40": (_set(4, MAX_COUNTER), "epoch must be an integer"),
    "lamport 0": (_set(6, 0), "lamport must be an integer in 1..2^40"),
    "lamport 2^40": (_set(6, MAX_COUNTER), "lamport must be an integer"),
    "kind 0": (_set(7, 0), "unknown event kind 0"),
    "kind after the last": (_set(7, max(Kind) + 1), f"unknown event kind {max(Kind) + 1}"),
    "kind true": (_set(7, True), "unknown event kind"),
    "kind as name": (_set(7, "MESSAGE"), "unknown event kind"),
    "body as text": (_set(8, "text"), "body must be bytes"),
    "body over 80 KiB": (_set(8, bytes(MAX_BODY_LEN + 1)), "body must be bytes of at most"),
    "signature of 63 bytes": (_set(9, bytes(63)), "signature must be 64 bytes"),
    "signature missing": (_set(9, None), "signature must be 64 bytes"),
    "clock as map": (_clock({}), "clock must be an array"),
    "clock entries over the limit": (
        _clock([[peer(i), 1] for i in range(MAX_CLOCK_ENTRIES + 1)]),
        f"clock delta of {MAX_CLOCK_ENTRIES + 1} entries exceeds {MAX_CLOCK_ENTRIES}",
    ),
    "clock of thousands of entries": (
        _clock([[peer(i), 1] for i in range(2000)]), "clock delta of 2000 entries exceeds",
    ),
    "clock entry not a pair": (_clock([[peer(1), 1, 1]]), "clock entries are [author, seq]"),
    "clock entry flat": (_clock([peer(1), 1]), "clock entries are [author, seq]"),
    "clock author of 31 bytes": (_clock([[bytes(31), 1]]), "clock author must be 32 bytes"),
    "clock seq 0": (_clock([[peer(1), 0]]), "clock seq must be an integer in 1..2^40"),
    "clock seq 2^40": (_clock([[peer(1), MAX_COUNTER]]), "clock seq must be an integer"),
    "clock seq huge": (_clock([[peer(1), 2**63]]), "clock seq must be an integer"),
    "clock seq negative": (_clock([[peer(1), -5]]), "clock seq must be an integer"),
    "clock unsorted": (_clock([[peer(2), 1], [peer(1), 1]]), "must be sorted by author"),
    "clock duplicate": (_clock([[peer(1), 1], [peer(1), 2]]), "without duplicates"),
}


@pytest.mark.parametrize("case", FIELD_CASES.values(), ids=list(FIELD_CASES))
def test_decode_rejects_bad_fields(sample: Event, case: tuple[Any, str]) -> None:
    mutate, message = case
    with pytest.raises(EventError, match=message.replace("[", r"\[").replace("^", r"\^")):
        decode_event(pack(mutate(fields_of(sample))))


def test_clock_delta_must_not_name_its_author(sample: Event) -> None:
    f = fields_of(sample)
    f[5] = sorted([*f[5], [sample.author, sample.seq - 1]])
    with pytest.raises(EventError, match="must not contain the author's own entry"):
        decode_event(pack(f))


RAW_CASES: dict[str, tuple[Any, str]] = {
    "empty": (lambda raw: b"", "malformed event"),
    "not msgpack": (lambda raw: b"\xc1", "malformed event"),
    "truncated": (lambda raw: raw[:-1], "malformed event"),
    "trailing bytes": (lambda raw: raw + b"\x00", "malformed event: trailing bytes"),
    "over the size limit": (
        lambda raw: raw + bytes(MAX_EVENT_LEN), f"exceeds {MAX_EVENT_LEN}"
    ),
    "an integer": (lambda raw: pack(7), "an event is an array of 10 fields"),
    # the same values in a longer encoding: one event must have exactly one byte form
    "array16 header": (lambda raw: b"\xdc\x00\x0a" + raw[1:], "not in canonical form"),
    "extension type": (lambda raw: msgpack.packb(msgpack.ExtType(1, raw)), "extension type"),
}


@pytest.mark.parametrize("case", RAW_CASES.values(), ids=list(RAW_CASES))
def test_decode_rejects_bad_bytes(sample: Event, case: tuple[Any, str]) -> None:
    mutate, message = case
    with pytest.raises(EventError, match=message):
        decode_event(mutate(sample.raw))


def test_decode_rejects_a_long_form_integer(sample: Event) -> None:
    """``seq`` as a uint32 instead of its one-byte form: same value, other bytes."""
    f = fields_of(sample)
    packed = [pack(x) for x in f]
    assert sample.seq < 128
    packed[3] = b"\xce" + struct.pack(">I", sample.seq)
    raw = b"\x9a" + b"".join(packed)
    with pytest.raises(EventError, match="not in canonical form"):
        decode_event(raw)


def test_decode_rejects_a_long_form_body(sample: Event) -> None:
    f = fields_of(sample)
    packed = [pack(x) for x in f]
    assert len(sample.body) < 256 and packed[8][0] == 0xC4  # bin8
    packed[8] = b"\xc5" + struct.pack(">H", len(sample.body)) + sample.body  # bin16
    with pytest.raises(EventError, match="not in canonical form"):
        decode_event(b"\x9a" + b"".join(packed))


def test_decode_accepts_the_limits_exactly(sample: Event) -> None:
    """512 clock entries and counters of 2^40 - 1 are still valid encodings."""
    u = replace(
        sample.unsigned,
        seq=MAX_COUNTER - 1,
        epoch=MAX_COUNTER - 1,
        lamport=MAX_COUNTER - 1,
        clock=tuple((peer(i), MAX_COUNTER - 1) for i in range(MAX_CLOCK_ENTRIES)),
    )
    event = u.signed(bytes(64))
    decoded = decode_event(event.raw)
    assert decoded == event and decoded.id == event.id
    assert len(decoded.clock) == MAX_CLOCK_ENTRIES


def test_decode_does_not_check_signatures(sample: Event) -> None:
    """Decoding is about form only: the core checks the signature at delivery."""
    forged = sample.unsigned.signed(bytes(64))
    assert decode_event(forged.raw) == forged


# -- body schemas -----------------------------------------------------------------------

NONCE = bytes(16)
M = MALLORY.peer_id


def _dup_key_map() -> bytes:
    # {"member": M, "member": M}: msgpack allows duplicate keys, Kith does not
    return b"\x82" + pack("member") + pack(M) + pack("member") + pack(M)


BODY_CASES: dict[str, tuple[Kind, Any, str]] = {
    "not msgpack": (Kind.LEAVE, b"\xc1", "malformed LEAVE body"),
    "trailing bytes": (Kind.LEAVE, pack({}) + b"\x00", "malformed LEAVE body"),
    "array, not map": (Kind.REMOVE, [M], "REMOVE body must be a map"),
    "duplicate keys": (Kind.REMOVE, _dup_key_map(), "duplicate map key"),
    "create lacks add policy": (
        Kind.CREATE, {"name": "g", "mode": "private", "nonce": NONCE, "max": 10},
        "CREATE body lacks 'add'",
    ),
    "create unknown key": (
        Kind.CREATE,
        {"name": "g", "mode": "private", "nonce": NONCE, "max": 10, "add": "members",
         "history": False, "x": 1},
        "CREATE body has unknown keys ['x']",
    ),
    "create empty name": (
        Kind.CREATE, {"name": "", "mode": "private", "nonce": NONCE, "max": 10, "add": "members"},
        "CREATE 'name' must be a string of 1..64",
    ),
    "create long name": (
        Kind.CREATE,
        {"name": "n" * (MAX_GROUP_NAME + 1), "mode": "private", "nonce": NONCE, "max": 10,
         "add": "members"},
        "CREATE 'name' must be a string",
    ),
    "create unknown mode": (
        Kind.CREATE, {"name": "g", "mode": "public", "nonce": NONCE, "max": 10, "add": "members"},
        "CREATE 'mode' must be one of private, pairwise",
    ),
    "create short nonce": (
        Kind.CREATE,
        {"name": "g", "mode": "private", "nonce": bytes(15), "max": 10, "add": "members"},
        "CREATE 'nonce' must be 16 bytes",
    ),
    "create max 1": (
        Kind.CREATE, {"name": "g", "mode": "private", "nonce": NONCE, "max": 1, "add": "members"},
        "CREATE 'max' must be an integer in 2..5000",
    ),
    "create max over the hard cap": (
        Kind.CREATE,
        {"name": "g", "mode": "private", "nonce": NONCE, "max": HARD_MAX_MEMBERS + 1,
         "add": "members"},
        "CREATE 'max' must be an integer",
    ),
    "create max true": (
        Kind.CREATE,
        {"name": "g", "mode": "private", "nonce": NONCE, "max": True, "add": "members"},
        "CREATE 'max' must be an integer",
    ),
    "create unknown policy": (
        Kind.CREATE,
        {"name": "g", "mode": "private", "nonce": NONCE, "max": 10, "add": "anyone"},
        "CREATE 'add' must be one of members, admins",
    ),
    "add unknown role": (Kind.ADD, {"member": M, "role": "root", "name": ""}, "unknown role"),
    "add role as number": (Kind.ADD, {"member": M, "role": 3, "name": ""}, "unknown role"),
    "add short member": (
        Kind.ADD, {"member": bytes(31), "role": "member", "name": ""},
        "ADD 'member' must be 32 bytes",
    ),
    "add name not text": (
        Kind.ADD, {"member": M, "role": "member", "name": b"x"}, "ADD 'name' must be a string",
    ),
    "add lacks name": (Kind.ADD, {"member": M, "role": "member"}, "ADD body lacks 'name'"),
    "remove extra key": (Kind.REMOVE, {"member": M, "why": "x"}, "unknown keys ['why']"),
    "remove member as text": (Kind.REMOVE, {"member": "m" * 32}, "'member' must be 32 bytes"),
    "ban lacks member": (Kind.BAN, {}, "BAN body lacks 'member'"),
    "leave with a key": (Kind.LEAVE, {"x": 1}, "LEAVE body has unknown keys"),
    "set role lacks role": (Kind.SET_ROLE, {"member": M}, "SET_ROLE body lacks 'role'"),
    "rename too long": (
        Kind.RENAME, {"name": "n" * (MAX_GROUP_NAME + 1)}, "RENAME 'name' must be a string",
    ),
    "set policy unknown": (Kind.SET_POLICY, {"add": "all"}, "SET_POLICY 'add' must be one of"),
    "sender key negative epoch": (
        Kind.SENDER_KEY, {"epoch": -1, "sign": bytes(32), "keys": []},
        "SENDER_KEY 'epoch' must be an integer",
    ),
    "sender key short signing key": (
        Kind.SENDER_KEY, {"epoch": 0, "sign": bytes(31), "keys": []},
        "SENDER_KEY 'sign' must be 32 bytes",
    ),
    "sender keys unsorted": (
        Kind.SENDER_KEY, {"epoch": 0, "sign": bytes(32),
                          "keys": [[peer(2), bytes(89)], [peer(1), bytes(89)]]},
        "sorted [member, sealed key] pairs",
    ),
    "sender keys duplicate member": (
        Kind.SENDER_KEY, {"epoch": 0, "sign": bytes(32),
                          "keys": [[peer(1), bytes(89)], [peer(1), bytes(89)]]},
        "sorted [member, sealed key] pairs",
    ),
    "sender key blob too big": (
        Kind.SENDER_KEY, {"epoch": 0, "sign": bytes(32), "keys": [[peer(1), bytes(257)]]},
        "sorted [member, sealed key] pairs",
    ),
    "sender keys as map": (
        Kind.SENDER_KEY, {"epoch": 0, "sign": bytes(32), "keys": {}},
        "SENDER_KEY 'keys' must be a list",
    ),
    "private message negative index": (
        Kind.MESSAGE, {"n": -1, "ct": b"x"}, "MESSAGE 'n' must be an integer in 0..",
    ),
    "private message index over 2^40": (
        Kind.MESSAGE, {"n": 2**40 + 1, "ct": b"x"}, "MESSAGE 'n' must be an integer",
    ),
    "private message text ciphertext": (
        Kind.MESSAGE, {"n": 0, "ct": "hello"}, "MESSAGE 'ct' must be at most",
    ),
    "private message ciphertext too big": (
        Kind.MESSAGE, {"n": 0, "ct": bytes(64 * 1024 + 1)}, "MESSAGE 'ct' must be at most",
    ),
    "private message extra key": (
        Kind.MESSAGE, {"n": 0, "ct": b"x", "text": "plain"}, "unknown keys ['text']",
    ),
    "private message in pairwise form": (
        Kind.MESSAGE, {"salt": NONCE, "commit": bytes(32)}, "MESSAGE body lacks 'n'",
    ),
}


@pytest.mark.parametrize("case", BODY_CASES.values(), ids=list(BODY_CASES))
def test_bodies_are_strict(case: tuple[Kind, Any, str]) -> None:
    kind, body, message = case
    raw = body if isinstance(body, bytes) else pack(body)
    with pytest.raises(EventError, match=message.replace("[", r"\[").replace(".", r"\.")):
        decode_body(kind, raw)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"salt": bytes(15), "commit": bytes(32)}, "'salt' must be 16 bytes"),
        ({"salt": NONCE, "commit": bytes(31)}, "'commit' must be 32 bytes"),
        ({"n": 0, "ct": b"x"}, "MESSAGE body lacks 'salt'"),
        ({"salt": NONCE, "commit": bytes(32), "n": 0}, "unknown keys"),
    ],
)
def test_pairwise_message_bodies_are_strict(body: dict[str, Any], message: str) -> None:
    with pytest.raises(EventError, match=message):
        decode_body(Kind.MESSAGE, pack(body), mode="pairwise")


def test_every_body_round_trips() -> None:
    bodies: list[Body] = [
        Create("g", "pairwise", NONCE, 7, "admins"), Add(M, Role.GUEST, "m"), Remove(M),
        Ban(M), Leave(), SetRole(M, Role.ADMIN), Rename("r"), SetPolicy("admins"),
        SenderKey(3, bytes(32), ((peer(1), bytes(89)), (peer(2), bytes(89)))),
        PrivateMessage(9, b"ct"),
    ]
    for body in bodies:
        assert decode_body(kind_of(body), encode_body(body)) == body
    pairwise = PairwiseMessage(NONCE, bytes(32))
    assert decode_body(Kind.MESSAGE, encode_body(pairwise), mode="pairwise") == pairwise


# -- a signed event with a bad body, kind or signature ----------------------------------


def test_a_signed_event_with_a_bad_body_is_rejected_with_what_follows_it() -> None:
    rs, history = founded((BOB, Role.MEMBER))
    bob = rs[BOB.peer_id]
    core = observer(history)
    bad = forge(bob, pack({"member": BOB.peer_id, "extra": 1}), kind=Kind.LEAVE)
    later = forge(bob, Leave(), seq=bad.seq + 1, lamport=bad.lamport + 1)
    assert core.receive(later) == []  # waits for ``bad``
    effects = core.receive(bad)
    assert [type(e) for e in effects] == [Rejected, Rejected]
    assert "LEAVE body has unknown keys" in effects[0].reason  # type: ignore[union-attr]
    assert "follows a rejected event" in effects[1].reason  # type: ignore[union-attr]
    assert core.buffered() == {} and BOB.peer_id in core.state.members
    # bob's real event for that seq is still welcome: nothing was recorded against him
    assert isinstance(core.receive(bob.author(Leave()))[0], Delivered)


def test_a_body_of_another_kind_is_rejected() -> None:
    """An ADD body under the REMOVE kind: the schema of the kind decides, not the body."""
    rs, history = founded()
    owner = rs[OWNER.peer_id]
    core = observer(history)
    event = forge(owner, encode_body(Add(BOB.peer_id, Role.MEMBER, "")), kind=Kind.REMOVE)
    rejected(core.receive(event), "REMOVE body has unknown keys")


def test_signed_by_another_members_key_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), (MALLORY, Role.MEMBER), mode="pairwise")
    core = observer(history)
    # mallory authors "as bob", with a real signature of her own
    as_bob = forge(rs[BOB.peer_id], PairwiseMessage(NONCE, bytes(32)),
                   signer=MALLORY.signing_key)
    rejected(core.receive(as_bob), "bad signature")
    # ... or takes bob's real signature and changes the content
    real = rs[BOB.peer_id].say("real")
    altered = replace(real.unsigned, body=encode_body(PairwiseMessage(NONCE, bytes(32))))
    rejected(core.receive(altered.signed(real.signature)), "bad signature")
    # ... or keeps the content and claims another author
    stolen = replace(real.unsigned, author=MALLORY.peer_id)
    rejected(core.receive(stolen.signed(real.signature)), "bad signature")
    assert isinstance(core.receive(real)[0], Delivered)  # the real one is unharmed


def test_private_message_signed_by_another_members_sender_key_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), (MALLORY, Role.MEMBER))
    bob, mallory = rs[BOB.peer_id], rs[MALLORY.peer_id]
    core = observer(history)
    for replica in (bob, mallory):
        core.receive(replica.new_sender_key())
    mallory_sender_key = mallory._sender_keys[0]
    forged = forge(bob, PrivateMessage(0, b"as bob"), signer=mallory_sender_key)
    rejected(core.receive(forged), "bad signature")


def test_group_field_of_another_group_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    core = observer(history)
    moved = forge(rs[BOB.peer_id], PairwiseMessage(NONCE, bytes(32)), group=GroupId(bytes(32)))
    rejected(core.receive(moved), "event for another group")


# -- CREATE --------------------------------------------------------------------------------


def test_create_by_someone_else_for_a_group_not_derived_from_them() -> None:
    """Mallory races the owner with her own CREATE for the owner's group id."""
    _, history = founded(mode="pairwise")
    real_create = history[0]
    gid = real_create.group
    real_body = decode_body(Kind.CREATE, real_create.body)
    assert isinstance(real_body, Create)
    mallory = Replica(MALLORY, gid)
    core = GroupCore(gid)
    # with a fresh nonce, and with the owner's very nonce (the id commits to the creator)
    for nonce in (os.urandom(16), real_body.nonce):
        assert group_id_for(MALLORY.peer_id, nonce) != gid
        fake = forge(mallory, Create("mine", "pairwise", nonce, 500))
        rejected(core.receive(fake), "CREATE must be its author's first event of its group")
    assert not core.state.created
    assert isinstance(core.receive(real_create)[0], Delivered)
    assert core.state.owner == OWNER.peer_id


def test_a_second_create_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    owner = rs[OWNER.peer_id]
    core = observer(history)
    body = decode_body(Kind.CREATE, history[0].body)
    assert isinstance(body, Create)
    again = forge(owner, replace(body, name="taken over", max_members=2))
    rejected(core.receive(again), "CREATE must be its author's first event")
    assert core.state.name == "test" and core.state.max_members == 500


def test_an_event_without_the_create_in_its_past_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    core = observer(history)
    bob = rs[BOB.peer_id]
    # bob's first event, claiming to have seen nothing: the CREATE is not in its past
    blind = forge(bob, PairwiseMessage(NONCE, bytes(32)), clock=(), lamport=1)
    rejected(core.receive(blind), "the group has no CREATE in this event's past")


# -- sender keys and epochs -------------------------------------------------------------


def test_second_sender_key_for_the_same_epoch_with_another_signing_key() -> None:
    rs, history = founded((BOB, Role.MEMBER))
    bob = rs[BOB.peer_id]
    core = observer(history)
    first = bob.new_sender_key()
    assert isinstance(core.receive(first)[0], Delivered)
    # the same key again (handed to a newcomer) is fine ...
    again = bob.author(SenderKey(0, bytes(bob._sender_keys[0].verify_key), ()))
    assert isinstance(core.receive(again)[0], Delivered)
    # ... a different one for the same epoch is not: it would let bob re-sign old messages
    rogue = nacl.signing.SigningKey.generate()
    swap = forge(bob, SenderKey(0, bytes(rogue.verify_key), ()))
    rejected(core.receive(swap), "a second, different sender key for the same epoch")
    assert core.signing_keys[(BOB.peer_id, 0)] == bytes(bob._sender_keys[0].verify_key)
    # and a message signed by the rogue key does not verify
    message = forge(bob, PrivateMessage(0, b"x"), signer=rogue)
    rejected(core.receive(message), "bad signature")


def test_sender_key_epoch_must_match_its_event() -> None:
    rs, history = founded((BOB, Role.MEMBER))
    bob = rs[BOB.peer_id]
    core = observer(history)
    signing = nacl.signing.SigningKey.generate()
    mismatch = forge(bob, SenderKey(4, bytes(signing.verify_key), ()))
    assert mismatch.epoch == 0
    rejected(core.receive(mismatch), "SENDER_KEY epoch differs from its event's epoch")


def test_message_from_a_future_epoch_without_its_sender_key() -> None:
    rs, history = founded((BOB, Role.MEMBER))
    bob = rs[BOB.peer_id]
    core = observer(history)
    core.receive(bob.new_sender_key())
    future_key = nacl.signing.SigningKey.generate()
    future = forge(bob, PrivateMessage(0, b"from the future"), epoch=7, signer=future_key)
    assert future.epoch == 7
    rejected(core.receive(future), "no sender key of its author for epoch 7")


def test_epoch_going_backwards_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER))
    bob = rs[BOB.peer_id]
    core = observer(history)
    for _ in range(2):
        core.receive(bob.new_sender_key())
    assert bob.epoch == 1
    old = forge(bob, Leave(), epoch=0)
    rejected(core.receive(old), "epoch went backwards")


# -- clocks --------------------------------------------------------------------------------


def test_clock_delta_that_lowers_or_repeats_an_entry() -> None:
    rs, history = founded((BOB, Role.MEMBER), (CAROL, Role.MEMBER), mode="pairwise")
    bob, carol = rs[BOB.peer_id], rs[CAROL.peer_id]
    core = observer(history)
    said = carol.say("x")
    bob.receive(said)
    core.receive(said)
    core.receive(bob.say("seen carol's message"))
    # bob's next delta repeats the owner's entry he already had
    owner_seen = bob.core.clock_at(BOB.peer_id, bob.core.frontier[BOB.peer_id])[OWNER.peer_id]
    repeat = forge(bob, Leave(), clock=((OWNER.peer_id, owner_seen),))
    rejected(core.receive(repeat), "clock delta lowers or repeats an entry")


def test_lamport_below_its_dependencies_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    core = observer(history)
    low = forge(rs[BOB.peer_id], PairwiseMessage(NONCE, bytes(32)), lamport=1)
    rejected(core.receive(low), "lamport 1 is not 1 + the maximum of its dependencies")


def test_a_clock_naming_events_that_do_not_exist_waits_bounded() -> None:
    """Valid, signed, but depends on CAROL's event 10**9: it waits and never delivers."""
    rs, history = founded((BOB, Role.MEMBER), (CAROL, Role.MEMBER), mode="pairwise")
    bob, carol = rs[BOB.peer_id], rs[CAROL.peer_id]
    core = observer(history, max_buffer_per_author=4, max_buffer=8)
    absurd = forge(bob, PairwiseMessage(NONCE, bytes(32)),
                   clock=((CAROL.peer_id, 10**9),), lamport=MAX_COUNTER - 1)
    assert decode_event(absurd.raw) == absurd  # well-formed: only its past is missing
    assert core.receive(absurd) == []
    assert core.buffered() == {BOB.peer_id: [absurd.seq]}
    assert isinstance(core.receive(absurd)[0], Duplicate)  # waiting, not counted twice
    assert len(core.waiting()) == 1
    # bob's later events queue behind it, at most 4 of them
    later = [forge(bob, Leave(), seq=absurd.seq + i, lamport=MAX_COUNTER - 1)
             for i in range(1, 6)]
    results = [core.receive(e) for e in later]
    assert [type(r[0]) for r in results if r] == [Dropped, Dropped]
    assert core.buffered() == {BOB.peer_id: [absurd.seq + i for i in range(4)]}
    # other members are unaffected
    assert isinstance(core.receive(carol.say("still here"))[0], Delivered)


def test_equivocation_inside_the_buffer_between_two_signed_events() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    bob = rs[BOB.peer_id]
    core = observer(history)
    blocker = forge(bob, PairwiseMessage(NONCE, bytes(32)))  # withheld
    one = forge(bob, PairwiseMessage(NONCE, b"1" * 32), seq=blocker.seq + 1,
                lamport=blocker.lamport + 1)
    two = forge(bob, PairwiseMessage(NONCE, b"2" * 32), seq=blocker.seq + 1,
                lamport=blocker.lamport + 1)
    assert core.receive(one) == []
    effect = only(core.receive(two))
    assert isinstance(effect, Equivocation) and effect.first == one.id and effect.seq == one.seq


# -- membership claims not covered by test_core ---------------------------------------------


def _roles() -> tuple[dict[PeerId, Replica], list[Event]]:
    return founded((BOB, Role.ADMIN), (CAROL, Role.MEMBER), (MALLORY, Role.MEMBER),
                   mode="pairwise")


CLAIMS: dict[str, tuple[IdentityKey, Body, str]] = {
    "member sets its own role": (
        MALLORY, SetRole(MALLORY.peer_id, Role.ADMIN), "only owner and admins may set role",
    ),
    "member renames": (MALLORY, Rename("mine"), "only owner and admins may rename"),
    "member sets the add policy": (
        MALLORY, SetPolicy("admins"), "only owner and admins may set policy",
    ),
    "member bans": (MALLORY, Ban(CAROL.peer_id), "only owner and admins may ban"),
    "member adds an admin": (
        MALLORY, Add(IdentityKey.generate().peer_id, Role.ADMIN, ""),
        "cannot give a role above one's own",
    ),
    "admin adds an owner": (
        BOB, Add(IdentityKey.generate().peer_id, Role.OWNER, ""),
        "cannot give a role above one's own",
    ),
    "member adds a member twice": (
        MALLORY, Add(CAROL.peer_id, Role.MEMBER, ""), "already a member",
    ),
    "admin promotes to admin": (
        BOB, SetRole(CAROL.peer_id, Role.ADMIN), "can only change roles below one's own",
    ),
    "admin promotes itself": (
        BOB, SetRole(BOB.peer_id, Role.OWNER), "can only change roles below one's own",
    ),
    "admin removes the owner": (BOB, Remove(OWNER.peer_id), "nobody can remove or ban the owner"),
    "admin bans the owner": (BOB, Ban(OWNER.peer_id), "nobody can remove or ban the owner"),
    "admin removes a stranger": (
        BOB, Remove(IdentityKey.generate().peer_id), "not a member",
    ),
    "admin sets the role of a stranger": (
        BOB, SetRole(IdentityKey.generate().peer_id, Role.GUEST), "not a member",
    ),
}


@pytest.mark.parametrize("claim", CLAIMS.values(), ids=list(CLAIMS))
def test_claiming_a_role_one_does_not_have(claim: tuple[IdentityKey, Body, str]) -> None:
    author, body, reason = claim
    rs, history = _roles()
    core = observer(history)
    before = dict(core.state.members), core.state.name, core.state.add_policy
    rejected(core.receive(forge(rs[author.peer_id], body)), reason)
    assert (dict(core.state.members), core.state.name, core.state.add_policy) == before


def test_guest_cannot_add_and_policy_admins_stops_members() -> None:
    rs, history = founded((BOB, Role.GUEST), (CAROL, Role.MEMBER), mode="pairwise")
    owner, bob, carol = rs[OWNER.peer_id], rs[BOB.peer_id], rs[CAROL.peer_id]
    core = observer(history)
    newcomer = IdentityKey.generate().peer_id
    rejected(core.receive(forge(bob, Add(newcomer, Role.GUEST, ""))),
             "only members may add members")
    policy = owner.author(SetPolicy("admins"))
    assert [type(e) for e in core.receive(policy)] == [Delivered, MembershipChanged]
    carol.receive(policy)
    rejected(core.receive(forge(carol, Add(newcomer, Role.GUEST, ""))),
             "only admins may add members")


def test_adding_to_a_full_group_is_rejected() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise", max_members=2)
    core = observer(history)
    full = forge(rs[BOB.peer_id], Add(CAROL.peer_id, Role.MEMBER, ""))
    rejected(core.receive(full), "the group is full (2 members)")


def test_stranger_cannot_leave_or_add_itself() -> None:
    _, history = founded((BOB, Role.MEMBER), mode="pairwise")
    stranger = Replica(MALLORY, history[0].group)
    stranger.receive(*history)
    core = observer(history)
    rejected(core.receive(forge(stranger, Add(MALLORY.peer_id, Role.MEMBER, ""))),
             "author is not a member")
    rejected(core.receive(forge(stranger, Leave())), "author is not a member")


def test_removed_member_cannot_hand_out_a_sender_key() -> None:
    rs, history = founded((BOB, Role.MEMBER), (MALLORY, Role.MEMBER))
    owner, mallory = rs[OWNER.peer_id], rs[MALLORY.peer_id]
    removal = owner.author(Remove(MALLORY.peer_id))
    core = observer([*history, removal])
    mallory.receive(removal)
    signing = nacl.signing.SigningKey.generate()
    key_event = forge(mallory, SenderKey(0, bytes(signing.verify_key), ()))
    rejected(core.receive(key_event), "author is not a member")


# -- a hostile peer and the buffer (events in the buffer are not yet verified) ---------------


def _junk(core: GroupCore, authors: int, per_author: int) -> None:
    """Events of made-up keys (properly signed), each waiting for a seq that never comes."""
    for _ in range(authors):
        fake = IdentityKey.generate()
        for seq in range(2, 2 + per_author):
            junk = UnsignedEvent(core.group_id, fake.peer_id, seq, 0, (), 9, Kind.LEAVE,
                                 encode_body(Leave()))
            core.receive(junk.signed(fake.sign(junk.signing_bytes())))


def test_junk_buffer_stays_bounded() -> None:
    _, history = founded((BOB, Role.MEMBER), mode="pairwise")
    core = observer(history, max_buffer_per_author=4, max_buffer=8)
    _junk(core, authors=10, per_author=10)
    assert len(core.waiting()) == 8
    per_author = [len(seqs) for seqs in core.buffered().values()]
    assert sum(per_author) == 8 and max(per_author) <= 4


def test_forged_junk_is_refused_before_the_buffer() -> None:
    """Events that claim a member's or a made-up key but are not signed by it never wait."""
    _, history = founded((BOB, Role.MEMBER), mode="pairwise")
    core = observer(history, max_buffer_per_author=4, max_buffer=8)
    fake = PeerId(os.urandom(32))
    for author in (fake, BOB.peer_id):
        junk = UnsignedEvent(core.group_id, author, 5, 0, (), 9, Kind.LEAVE, encode_body(Leave()))
        rejected(core.receive(junk.signed(bytes(64))), "bad signature")
    assert core.waiting() == []


def test_junk_in_a_full_buffer_does_not_crowd_out_members() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    bob = rs[BOB.peer_id]
    core = observer(history, max_buffer_per_author=4, max_buffer=8)
    _junk(core, authors=3, per_author=4)
    assert len(core.waiting()) == 8
    first, second = bob.say("one"), bob.say("two")
    # bob's second event waits for his first: a stranger's junk makes room for it
    assert core.receive(second) == []
    assert len(core.waiting()) == 8 and second in core.waiting()
    assert [type(e) for e in core.receive(first)] == [Delivered, Delivered]


def test_forged_event_cannot_take_its_authors_place() -> None:
    """A forgery of bob's next event is refused on arrival; bob's real one is delivered."""
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    bob = rs[BOB.peer_id]
    core = observer(history)
    real = bob.say("the real one")
    # with an unsatisfiable clock, so that it would wait if it were let in
    forged = replace(real.unsigned, body=encode_body(PairwiseMessage(NONCE, bytes(32))),
                     clock=((peer(1), 1),)).signed(bytes(64))
    rejected(core.receive(forged), "bad signature")
    effects = core.receive(real)
    assert not any(isinstance(e, Equivocation) for e in effects), effects
    assert isinstance(effects[0], Delivered)


def test_forged_copy_of_a_delivered_event_is_not_an_equivocation() -> None:
    rs, history = founded((BOB, Role.MEMBER), mode="pairwise")
    bob = rs[BOB.peer_id]
    core = observer(history)
    real = bob.say("the real one")
    assert isinstance(core.receive(real)[0], Delivered)
    forged = replace(real.unsigned, body=encode_body(PairwiseMessage(NONCE, bytes(32))))
    rejected(core.receive(forged.signed(bytes(64))), "bad signature")


def test_unverifiable_forgery_cannot_take_its_authors_place() -> None:
    """A private message "of bob" in an epoch whose key nobody has cannot be checked yet,
    so it may wait; but it must not push out bob's real, verifiable event for that seq."""
    rs, history = founded((BOB, Role.MEMBER))
    bob = rs[BOB.peer_id]
    core = observer(history)
    core.receive(bob.new_sender_key())
    real = bob.say("the real one")
    forged = replace(real.unsigned, epoch=99, clock=((peer(1), 1),)).signed(bytes(64))
    assert core.receive(forged) == []  # waits: neither its key nor its past is known
    effects = core.receive(real)
    assert [type(e) for e in effects] == [Delivered], effects


def test_gaps_of_an_absurd_clock_cost_no_memory() -> None:
    _, history = founded((BOB, Role.MEMBER))
    core = observer(history)
    # a stranger's private message (its sender key is unknown: it cannot be checked yet)
    stranger = PeerId(os.urandom(32))
    claim = 2 * 10**6  # stands for anything up to 2^40 - 1, which no machine survives
    waits = UnsignedEvent(core.group_id, stranger, 2, 0, ((BOB.peer_id, claim),), 9,
                          Kind.MESSAGE, encode_body(PrivateMessage(0, b"x")))
    assert core.receive(waits.signed(bytes(64))) == []
    tracemalloc.start()
    try:
        gaps = core.gaps()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert gaps[BOB.peer_id] == claim
    assert peak < 1_000_000, f"gaps() allocated {peak / 1e6:.0f} MB"
