"""Groups on a running node under bad input: reject, log why in one line, keep serving.

Each test runs alice (the victim) and bob (a legitimate member) as real nodes
(``open_node``: loopback TCP, Noise, SQLite files in ``tmp_path``) sharing a
private group, plus mallory: a raw ``SecureStream`` with her own identity that
speaks the group wire protocol by hand. Mallory mirrors the group in a
``Replica`` (fed with what alice pushes her, or, when she is not a member, with
alice's history) and authors or forges what each test needs. After the bad
input, alice must have logged why, in one line, and must still exchange group
messages with bob.

Nothing sleeps. Alice handles the messages of one channel in order, so once she
acks a replayed event mallory sent last (``Mallory.barrier``), everything mallory
sent before it has been handled; other waits are on log lines or on the nodes'
own change notifications, all under ``trio.fail_after``.

Only what needs a running node is here: bytes that do not decode (the driver
decodes messages and events before the member core sees them) and events for
a group alice is not in (the service's unknown-group buffer). How the group
protocol answers bad events (forgeries, non-members, claimed powers, replays,
sender keys, clocks, the causal buffer, acks, equivocation) is tested on the
member core, on the effects it returns: ``tests/group/test_member_bad_input.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nacl.signing
import trio

from node.api.python import Kith, open_node
from node.channel.core import Channel, Role
from node.crypto import sender_keys
from node.crypto.keys import IdentityKey, ed25519_to_x25519_public
from node.crypto.sender_keys import OwnSenderKey
from node.group import keys as K
from node.group.bodies import Add, Body, SenderKey, encode_body, kind_of
from node.group.bodies import Role as GroupRole
from node.group.events import Event, GroupId, decode_event
from node.group.invitations import MAX_GROUPS as MAX_PENDING_GROUPS
from node.group.state import GroupCore
from node.ids import PeerId, format_peer_id, short_id
from node.net.secure_stream import SecureStream
from node.service.groups import Group
from node.testing.groups import Replica
from node.wire.messages import (
    MAX_EVENTS,
    AckMessage,
    EventsMessage,
    GotMessage,
    VectorMessage,
    decode_message,
    encode_message,
)
from node.wire.strict import pack
from tests.integration import SOON, LogWatch, one_line

GROUP_LOG = "node.service.groups"

#: What a node says it stored: cumulative (``got``, or a ``vv``, which replaces the ``got``
#: owed), or per id (a sync batch's ``ack``).
Receipt = AckMessage | GotMessage | VectorMessage


def covers(receipt: Receipt, event: Event) -> bool:
    if isinstance(receipt, GotMessage):
        return dict(receipt.upto).get(event.author, 0) >= event.seq
    if isinstance(receipt, VectorMessage):
        return dict(receipt.vector).get(event.author, 0) >= event.seq
    return event.id in receipt.ids


# -- mallory: a raw peer speaking the group protocol by hand -------------------------------


class Mallory:
    """A hand-driven peer: her own identity, raw channels to alice and bob, replicas.

    Alice is the target; the channel to bob only carries mallory's events that
    alice accepted, as an honest member's fanout would: alice's later events
    depend on them, and bob should not have to wait for anti-entropy to relay them.
    Version vectors (sync) that the nodes send her are ignored.
    """

    def __init__(self, key: IdentityKey, stream: SecureStream, to_bob: SecureStream) -> None:
        self.key = key
        self.stream = stream
        self.to_bob = to_bob
        self.replicas: dict[GroupId, Replica] = {}
        self.own: dict[GroupId, K.OwnKey] = {}  # her sender key per group
        self.acks: list[Receipt] = []  # from alice
        self.bob_acks: list[Receipt] = []
        self._changed = trio.Event()

    @property
    def peer_id(self) -> PeerId:
        return self.key.peer_id

    @property
    def short(self) -> str:
        return short_id(self.peer_id)

    async def read(self, stream: SecureStream, acks: list[Receipt]) -> None:
        """Feed what a node sends into the replicas; note acks (until the channel ends)."""
        while True:
            try:
                data = await stream.receive_message()
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            message = decode_message(data)
            if isinstance(message, AckMessage | GotMessage | VectorMessage) and (
                    not isinstance(message, AckMessage) or message.kind == "ack"):
                acks.append(message)  # (a vector sent replaces the acknowledgement owed)
            elif isinstance(message, EventsMessage) and (
                replica := self.replicas.get(message.group)
            ) is not None:
                replica.receive(*(decode_event(raw) for raw in message.events))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(SOON):
            while not predicate():
                await self._changed.wait()

    # -- sending --

    async def send_data(self, data: bytes) -> None:
        await self.stream.send_message(data)

    async def send(self, group: GroupId, *events: Event | bytes) -> None:
        raws = tuple(e if isinstance(e, bytes) else e.raw for e in events)
        await self.send_data(encode_message(EventsMessage(group, raws)))

    async def share(self, group: GroupId, *events: Event) -> None:
        """Send good events to alice and to bob, as a member's fanout does."""
        await self.send(group, *events)
        data = encode_message(EventsMessage(group, tuple(e.raw for e in events)))
        await self.to_bob.send_message(data)
        await self.wait_until(
            lambda: all(any(covers(a, e) for a in self.bob_acks) for e in events))

    def times_acked(self, event: Event) -> int:
        return sum(covers(ack, event) for ack in self.acks)

    async def barrier(self, group: GroupId, known: Event) -> None:
        """Replay ``known`` (an event alice has) and wait for its ack: all before is handled."""
        before = self.times_acked(known)
        await self.send(group, known)
        await self.wait_until(lambda: self.times_acked(known) > before)

    # -- authoring --

    def mirror(self, group: GroupId, history: Sequence[Event] = ()) -> Replica:
        replica = self.replicas[group] = Replica(self.key, group)
        replica.receive(*history)
        return replica

    def sender_key(self, group: GroupId, recipients: list[PeerId]) -> Event:
        """A real SENDER_KEY (epoch 0): her chain sealed to ``recipients``."""
        replica = self.replicas[group]
        own = OwnSenderKey.generate()
        replica._sender_keys[0] = nacl.signing.SigningKey(own.signing_seed)
        self.own[group] = K.OwnKey(0, own, frozenset(recipients))
        # the older, inline form (every sealed key in the body): still accepted
        sealed = tuple((r, sender_keys.seal_for(ed25519_to_x25519_public(r), own.receiver_state()))
                       for r in sorted(recipients))
        return replica.author(SenderKey(0, own.signing_public, sealed))

    def say(self, group: GroupId, text: str) -> Event:
        """A real private message, encrypted with her sender key and signed by it."""
        own, body = K.encrypt_private(self.own[group], group, self.peer_id, text, K.Counters(),
                                      os.urandom)
        self.own[group] = own
        return self.replicas[group].author(body)

    def forge(self, group: GroupId, body: Body,
              signer: nacl.signing.SigningKey | None = None) -> Event:
        """Her next event as her replica sees the group, signed by ``signer`` (default:
        her identity key) and NOT delivered to her replica."""
        signer = self.key.signing_key if signer is None else signer
        unsigned = self.replicas[group].core.next_event(self.peer_id, 0, kind_of(body),
                                                        encode_body(body))
        return unsigned.signed(bytes(signer.sign(unsigned.signing_bytes()).signature))


# -- the scene -----------------------------------------------------------------------------


@dataclass
class Scene:
    alice: Kith
    bob: Kith
    group: str  # hex id, as the API takes it
    mallory: Mallory
    rounds: int = 0

    @property
    def gid(self) -> GroupId:
        return GroupId(bytes.fromhex(self.group))

    @property
    def a_group(self) -> Group:
        return self.alice.service.find(self.group)

    @property
    def core(self) -> GroupCore:
        return self.a_group.core

    @property
    def create(self) -> Event:
        return self.core.ordered()[0]

    def history(self) -> list[Event]:
        return self.core.ordered()

    def stored(self, event: Event) -> bool:
        return self.alice.service.store.has_event(event.id)

    async def join(self, role: str = "member") -> Replica:
        """Alice adds mallory; mallory's replica ends up with everything alice has.

        Alice pushes mallory the history, but bob's reaction to the ADD (a SENDER_KEY
        for the newcomer) only reaches alice: so wait for it there, then let mallory
        mirror alice's log.
        """
        replica = self.mallory.mirror(self.gid)
        self.alice.add(self.group, format_peer_id(self.mallory.peer_id), role=role)
        bob_core = self.bob.service.find(self.group).core
        bob_id = self.bob.node.peer_id
        with trio.fail_after(SOON):
            await self.bob.service.wait_until(
                lambda: self.mallory.peer_id in bob_core.state.members)
            await self.alice.service.wait_until(
                lambda: self.core.has(bob_id, bob_core.frontier[bob_id]))
        replica.receive(*self.history())
        assert all(replica.core.has(a, n) for a, n in self.core.frontier.items())
        return replica

    async def barrier(self) -> None:
        await self.mallory.barrier(self.gid, self.create)

    async def bob_says_relayed(self, text: str) -> Event:
        """Bob sends ``text``; mallory relays his event too, then waits for her barrier.

        Events may come from anyone (members pass on history), so after the barrier
        alice has handled bob's event at least once, whatever bob's channel does.
        """
        view = self.bob.send(self.group, text)
        bob_core = self.bob.service.find(self.group).core
        [event] = [e for e in bob_core.ordered() if e.id.hex() == view["id"]]
        await self.mallory.send(self.gid, *[e for e in bob_core.ordered()
                                            if e.author == event.author])
        await self.barrier()
        return event

    @property
    def honest(self) -> list[PeerId]:
        """The members mallory seals her sender keys to: alice and bob."""
        return [self.alice.node.peer_id, self.bob.node.peer_id]

    async def share_sender_key(self) -> None:
        """Mallory hands her sender key to alice and bob (before sending messages)."""
        await self.mallory.share(self.gid, self.mallory.sender_key(self.gid, self.honest))

    async def still_serving(self) -> None:
        """Bob and alice exchange group messages; mallory's channel is still up."""
        self.rounds += 1
        await exchange(self.alice, self.bob, self.group, f"round {self.rounds}")
        assert self.mallory.peer_id in self.alice.node.connections


async def wait_text(kith: Kith, group: str, text: str) -> None:
    """Wait until ``text`` is in ``kith``'s log of ``group``."""
    with trio.fail_after(SOON):
        await kith.group(group)
        await kith.service.wait_until(
            lambda: any(v["text"] == text for v in kith.log(group)))


async def exchange(alice: Kith, bob: Kith, group: str, tag: str) -> None:
    """Bob says something alice reads, and alice answers something bob reads."""
    with trio.fail_after(SOON):
        await bob.group(group)
    bob.send(group, f"bob: {tag}")
    await wait_text(alice, group, f"bob: {tag}")
    alice.send(group, f"alice: {tag}")
    await wait_text(bob, group, f"alice: {tag}")


async def handshake(kith: Kith, key: IdentityKey) -> SecureStream:
    """A raw channel with ``key`` to a node, once the node has admitted it."""
    host, _, port = kith.listen.rpartition(":")
    tcp = await trio.open_tcp_stream(host, int(port))
    stream = SecureStream(tcp, Channel(Role.INITIATOR, key, name="mallory"))
    try:
        with trio.fail_after(SOON):
            await stream.do_handshake()
            await kith.node.wait_until(lambda: key.peer_id in kith.node.connections)
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


@asynccontextmanager
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    async with open_node(tmp_path / "alice", name="alice") as alice, open_node(
        tmp_path / "bob", name="bob", peers=[alice.listen]
    ) as bob:
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
        group = alice.create_group("lab")
        alice.add(group, bob.peer_id)
        await exchange(alice, bob, group, "before")
        key = IdentityKey.generate()
        to_alice = await handshake(alice, key)
        try:
            to_bob = await handshake(bob, key)
            try:
                mallory = Mallory(key, to_alice, to_bob)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(mallory.read, to_alice, mallory.acks)
                    nursery.start_soon(mallory.read, to_bob, mallory.bob_acks)
                    try:
                        yield Scene(alice, bob, group, mallory)
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                await trio.aclose_forcefully(to_bob.transport)
        finally:
            await trio.aclose_forcefully(to_alice.transport)


# -- 1. malformed wire messages ------------------------------------------------------------


def _dup_keys(gid: bytes) -> bytes:
    items: tuple[object, ...] = ("t", "events", "g", gid, "ev", [], "t", "ack")
    return b"\x84" + b"".join(pack(x) for x in items)


MALFORMED: dict[str, tuple[Any, str]] = {
    "not msgpack": (lambda gid: b"\xc1\xc1", "malformed msgpack"),
    "empty": (lambda gid: b"", "malformed msgpack"),
    "trailing bytes": (
        lambda gid: encode_message(EventsMessage(GroupId(gid), ())) + b"\x00", "trailing bytes",
    ),
    "an array": (lambda gid: pack(["events", gid, []]), "peer message is not a map"),
    "duplicate keys": (_dup_keys, "duplicate map key 't'"),
    "extension type": (
        lambda gid: msgpack.packb(msgpack.ExtType(5, b"x")), "extension types are not allowed",
    ),
    "group id too short": (
        lambda gid: pack({"t": "events", "g": gid[:31], "ev": [], "cp": [], "sync": False}),
        "'g' must be a 32-byte group id",
    ),
    "group id as text": (
        lambda gid: pack({"t": "ack", "g": gid.hex(), "ids": []}), "'g' must be a 32-byte",
    ),
    "unknown type": (
        lambda gid: pack({"t": "gossip", "g": gid}), "unknown peer message type 'gossip'",
    ),
    "type missing": (lambda gid: pack({"g": gid, "ev": []}), "unknown peer message type None"),
    "missing key": (
        lambda gid: pack({"t": "events", "g": gid}), "peer message keys must be",
    ),
    "full and compact events": (
        lambda gid: pack({"t": "events", "g": gid, "ev": [], "evc": []}),
        "peer message keys must be",
    ),
    "compact event not of 9 fields": (
        lambda gid: pack({"t": "events", "g": gid, "evc": [b"\x9a\x01"]}), "'evc' entries",
    ),
    "extra key": (
        lambda gid: pack({"t": "ack", "g": gid, "ids": [], "x": 1}), "peer message keys must be",
    ),
    "events not a list": (
        lambda gid: pack({"t": "events", "g": gid, "ev": b"x", "cp": [], "sync": False}),
        "'ev' must be a list of at most 256 events",
    ),
    "an event not bytes": (
        lambda gid: pack({"t": "events", "g": gid, "ev": [1], "cp": [], "sync": False}),
        "'ev' must be a list",
    ),
    "too many events": (
        lambda gid: pack({"t": "events", "g": gid, "ev": [b""] * (MAX_EVENTS + 1), "cp": [],
                     "sync": False}),
        "'ev' must be a list of at most 256 events",
    ),
    "copies malformed": (
        lambda gid: pack({"t": "events", "g": gid, "ev": [], "cp": [[b"id", b"x"]],
                     "sync": False}),
        r"'cp' entries are \[event id, ciphertext\]",
    ),
    "too many acks": (
        lambda gid: pack({"t": "ack", "g": gid, "ids": [bytes(32)] * (MAX_EVENTS + 1)}),
        "'ids' must be a list of at most 256 event ids",
    ),
    "sync not a boolean": (
        lambda gid: pack({"t": "events", "g": gid, "ev": [], "cp": [], "sync": 1}),
        "'sync' must be a boolean",
    ),
    "version vector not a list": (
        lambda gid: pack({"t": "vv", "g": gid, "vv": {}, "want": True}), "'vv' must be a list",
    ),
    "ack id too short": (
        lambda gid: pack({"t": "ack", "g": gid, "ids": [bytes(31)]}), "'ids' must be a list",
    ),
}


async def test_malformed_wire_messages(tmp_path: Path, logs: LogWatch) -> None:
    """Each one is dropped; the channel stays up (it is still the same one). Lines are one
    per peer and kind of reason per interval, so the first is logged with its reason."""
    async with scene(tmp_path) as s:
        channel = s.alice.node.connections[s.mallory.peer_id]
        for i, (name, (make, reason)) in enumerate(MALFORMED.items()):
            await s.mallory.send_data(make(s.gid))
            if i == 0:
                line = await logs.wait_for(
                    rf"^dropping message from {s.mallory.short}: .*{reason}",
                    level=logging.WARNING)
                one_line(line)
            await s.barrier()
            assert s.alice.node.connections.get(s.mallory.peer_id) is channel, name
        lines = logs.matching(rf"^dropping message from {s.mallory.short}: ", logger=GROUP_LOG)
        assert 1 <= len(lines) < len(MALFORMED)  # rate limited, not one per message
        assert channel.close_reason == ""
        await s.still_serving()


async def test_malformed_events_inside_a_good_message(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        members = s.honest
        key_event = s.mallory.sender_key(s.gid, members)
        said = s.mallory.say(s.gid, "between the junk")
        await s.mallory.send(s.gid, b"junk", key_event, b"", said.raw + b"\x00", said,
                             pack([1] * 10))
        # one line per peer and kind of reason (three of the five junk events fail as
        # "malformed event: ...")
        lines = await logs.wait_for(rf"^dropping an event from {s.mallory.short}: ", count=2,
                                    level=logging.WARNING)
        one_line(lines)
        await s.mallory.wait_until(lambda: s.mallory.times_acked(said) == 1)
        # the good ones got through (one cumulative receipt for both)
        assert covers(s.mallory.acks[-1], key_event) and covers(s.mallory.acks[-1], said)
        await wait_text(s.alice, s.group, "between the junk")
        await s.mallory.share(s.gid, key_event, said)
        await s.still_serving()


# -- 2. unknown groups ---------------------------------------------------------------------


def found_group(mallory: Mallory, messages: int) -> tuple[Replica, list[Event]]:
    """A group of mallory's own with a few private messages (alice is not in it)."""
    replica, _ = Replica.founding(mallory.key)
    mallory.replicas[replica.core.group_id] = replica
    for i in range(messages):
        replica.say(f"m{i}")
    return replica, replica.core.ordered()


async def test_many_unknown_groups_are_held_bounded_and_never_adopted(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        groups = [found_group(s.mallory, 2) for _ in range(3 * MAX_PENDING_GROUPS)]
        for i, (replica, events) in enumerate(groups):
            await s.mallory.send(replica.core.group_id, *events)
            gid = replica.core.group_id.hex()[:12]
            if i == 0:  # (then one line per interval from this peer, not one per group)
                one_line(await logs.wait_for(
                    rf"^events from {s.mallory.short} for group {gid}, which we are not in: "
                    rf"holding {len(events)}$", logger=GROUP_LOG))
            await s.barrier()
            assert len(s.alice.service.invitations.pending) <= MAX_PENDING_GROUPS
        await s.barrier()
        assert list(s.alice.service.groups) == [s.gid]
        assert [row.id for row in s.alice.service.store.groups()] == [s.gid]
        acked = {ack.group for ack in s.mallory.acks}
        assert acked == {s.gid}  # only the barriers
        await s.still_serving()


async def test_an_invalid_invitation_is_not_adopted(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        replica, events = found_group(s.mallory, 0)
        other = replica.core.group_id
        # "mallory adds alice", with a signature that is not mallory's
        invite = s.mallory.forge(other, Add(s.alice.node.peer_id, GroupRole.MEMBER, "alice"),
                                 nacl.signing.SigningKey.generate())
        await s.mallory.send(other, *events, invite)
        one_line(await logs.wait_for(
            rf"^events from {s.mallory.short} for group {other.hex()[:12]}, which we are not "
            rf"in: holding 1$", logger=GROUP_LOG))
        await s.barrier()
        assert list(s.alice.service.groups) == [s.gid]
        await s.still_serving()


async def test_an_unknown_group_cannot_grow_without_bound(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        replica, _ = found_group(s.mallory, 6 * MAX_EVENTS)
        other = replica.core.group_id
        events = replica.core.ordered()
        for start in range(0, len(events), MAX_EVENTS):
            await s.mallory.send(other, *events[start:start + MAX_EVENTS])
        await s.barrier()
        pending = s.alice.service.invitations.pending[other]
        held = len(pending.ordered()) + len(pending.waiting())
        assert held <= pending.max_buffer, f"{held} events of an unknown group held"
        await s.still_serving()


async def test_events_of_an_unknown_group_without_its_create_are_logged(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        _, events = found_group(s.mallory, 1)
        other = events[0].group
        await s.mallory.send(other, *events[1:])  # everything but the CREATE
        await s.barrier()
        assert other in s.alice.service.invitations.pending
        # handled before the barrier's ack: a line would be there already
        lines = logs.matching(rf"for group {other.hex()[:12]}", logger=GROUP_LOG)
        assert lines
        one_line(lines)


