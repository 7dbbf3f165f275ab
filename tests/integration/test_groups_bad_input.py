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
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import nacl.signing
import pytest
import trio

from node.api.python import Kith, open_node
from node.channel.core import Channel, Role
from node.crypto import sender_keys
from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import MAX_JUMP, OwnSenderKey
from node.group import keys as K
from node.group.bodies import (
    Add,
    Body,
    PrivateMessage,
    Remove,
    SenderKey,
    SetRole,
    encode_body,
    kind_of,
)
from node.group.bodies import Role as GroupRole
from node.group.events import (
    MAX_CLOCK_ENTRIES,
    MAX_COUNTER,
    Event,
    EventId,
    GroupId,
    Kind,
    UnsignedEvent,
    decode_event,
)
from node.group.state import MAX_BUFFER, MAX_BUFFER_PER_AUTHOR, GroupCore
from node.ids import PeerId, format_peer_id, short_id
from node.net.secure_stream import SecureStream
from node.service.groups import MAX_PENDING_GROUPS, Group
from node.testing.groups import Replica
from node.wire.messages import (
    MAX_EVENTS,
    AckMessage,
    EventsMessage,
    decode_message,
    encode_message,
)
from node.wire.strict import pack
from tests.integration import SOON, LogWatch, one_line

GROUP_LOG = "node.service.groups"


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
        self.acks: list[AckMessage] = []  # from alice
        self.bob_acks: list[AckMessage] = []
        self._changed = trio.Event()

    @property
    def peer_id(self) -> PeerId:
        return self.key.peer_id

    @property
    def short(self) -> str:
        return short_id(self.peer_id)

    async def read(self, stream: SecureStream, acks: list[AckMessage]) -> None:
        """Feed what a node sends into the replicas; note acks (until the channel ends)."""
        while True:
            try:
                data = await stream.receive_message()
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            message = decode_message(data)
            if isinstance(message, AckMessage):
                acks.append(message)
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
            lambda: all(any(e.id in a.ids for a in self.bob_acks) for e in events))

    def times_acked(self, event_id: EventId) -> int:
        return sum(event_id in ack.ids for ack in self.acks)

    async def barrier(self, group: GroupId, known: Event) -> None:
        """Replay ``known`` (an event alice has) and wait for its ack: all before is handled."""
        before = self.times_acked(known.id)
        await self.send(group, known)
        await self.wait_until(lambda: self.times_acked(known.id) > before)

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
        return replica.author(K.distribution(own, 0, frozenset(recipients)))

    def say(self, group: GroupId, text: str) -> Event:
        """A real private message, encrypted with her sender key and signed by it."""
        own, body = K.encrypt_private(self.own[group], group, self.peer_id, text, K.Counters(),
                                      os.urandom)
        self.own[group] = own
        return self.replicas[group].author(body)

    def forge(
        self,
        group: GroupId,
        body: Body | bytes,
        *,
        kind: Kind | None = None,
        signer: nacl.signing.SigningKey | None = None,
        author: PeerId | None = None,
        **fields: Any,
    ) -> Event:
        """The next event of ``author`` (default: her) as her replica sees the group.

        Signed by ``signer`` (default: her identity key), NOT delivered to her
        replica; ``fields`` override fields of the unsigned event.
        """
        replica = self.replicas[group]
        if not isinstance(body, bytes):
            kind = kind or kind_of(body)
            body = encode_body(body)
        assert kind is not None
        unsigned = replica.core.next_event(author or self.peer_id, replica.epoch, kind, body)
        unsigned = replace(unsigned, **fields)
        key = signer or self.key.signing_key
        return unsigned.signed(bytes(key.sign(unsigned.signing_bytes()).signature))

    def sender_signing_key(self, group: GroupId) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.own[group].key.signing_seed)


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

    def alice_texts(self) -> list[str | None]:
        return [v["text"] for v in self.alice.log(self.group) if v["kind"] == "message"]

    def deliveries(self) -> int:
        return sum(map(len, self.alice.service.store.deliveries(self.gid).values()))

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


def rejected_line(author: PeerId, reason: str) -> str:
    return rf"^group lab: rejected event [0-9a-f]{{12}} from {short_id(author)}: {reason}"


def warnings_since(logs: LogWatch, mark: int) -> list[str]:
    records = logs.caplog.records[mark:]
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


# -- 1. forged signatures ------------------------------------------------------------------


async def test_forged_signature_as_another_member(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        bob_id = s.bob.node.peer_id
        # an event "by bob", at bob's next seq, signed by mallory's key
        as_bob = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(64)), author=bob_id)
        assert as_bob.seq == s.core.frontier[bob_id] + 1
        await s.mallory.send(s.gid, as_bob)
        one_line(await logs.wait_for(rejected_line(bob_id, "bad signature$"),
                                     level=logging.WARNING))
        # mallory's own SENDER_KEY signed by some other key
        wrong = s.mallory.forge(s.gid, SenderKey(0, bytes(32), ()),
                                signer=nacl.signing.SigningKey.generate())
        await s.mallory.send(s.gid, wrong)
        one_line(await logs.wait_for(rejected_line(s.mallory.peer_id, "bad signature$"),
                                     level=logging.WARNING))
        await s.barrier()
        assert not s.stored(as_bob) and not s.stored(wrong)
        assert s.mallory.times_acked(as_bob.id) == s.mallory.times_acked(wrong.id) == 0
        # bob's real event for that very seq is accepted: nothing was held against him
        await s.still_serving()
        assert s.core.frontier[bob_id] >= as_bob.seq
        assert s.alice.service.store.equivocations(s.gid) == []


# -- 2. non-members, removed members, guests -----------------------------------------------


async def test_event_from_a_non_member(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        # mallory is connected and knows the group's history, but was never added
        s.mallory.mirror(s.gid, s.history())
        members = s.honest
        key_event = s.mallory.forge(s.gid, K.distribution(OwnSenderKey.generate(), 0,
                                                          frozenset(members)))
        await s.mallory.send(s.gid, key_event)
        one_line(await logs.wait_for(rejected_line(s.mallory.peer_id, "author is not a member"),
                                     level=logging.WARNING))
        await s.barrier()
        assert not s.stored(key_event)
        assert s.mallory.peer_id not in s.core.state.members
        await s.still_serving()


async def test_events_from_a_removed_member(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        replica = await s.join()
        members = s.honest
        await s.mallory.share(s.gid, s.mallory.sender_key(s.gid, members),
                              s.mallory.say(s.gid, "while a member"))
        await wait_text(s.alice, s.group, "while a member")

        s.alice.remove(s.group, format_peer_id(s.mallory.peer_id))
        removal = s.core.ordered()[-1]
        assert removal.kind is Kind.REMOVE
        # made before she saw her removal (concurrent with it): stored, but withdrawn
        backdated = s.mallory.say(s.gid, "backdated")
        await s.mallory.share(s.gid, backdated)
        await s.barrier()
        assert s.stored(backdated) and s.core.is_withdrawn(backdated.author, backdated.seq)
        # made after it: rejected
        replica.receive(removal)
        late = s.mallory.forge(s.gid, PrivateMessage(1, os.urandom(64)),
                               signer=s.mallory.sender_signing_key(s.gid))
        await s.mallory.send(s.gid, late)
        one_line(await logs.wait_for(rejected_line(s.mallory.peer_id, "author is not a member"),
                                     level=logging.WARNING))
        await s.barrier()
        assert not s.stored(late)
        texts = s.alice_texts()
        assert "while a member" in texts and "backdated" not in texts
        await s.still_serving()
        # alice's new messages went out under a new sender key that mallory never got
        assert s.a_group.keys.own is not None and s.a_group.keys.own.epoch == 1
        assert s.mallory.peer_id not in s.a_group.keys.own.recipients


async def test_message_from_a_guest(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        await s.join(role="guest")
        assert s.core.state.role(s.mallory.peer_id) is GroupRole.GUEST
        members = s.honest
        key_event = s.mallory.forge(s.gid, K.distribution(OwnSenderKey.generate(), 0,
                                                          frozenset(members)))
        await s.mallory.send(s.gid, key_event)
        one_line(await logs.wait_for(rejected_line(s.mallory.peer_id, "guests cannot post"),
                                     level=logging.WARNING))
        await s.barrier()
        assert not s.stored(key_event)
        await s.still_serving()


# -- 3. claiming a role one does not have --------------------------------------------------


async def test_member_claiming_admin_powers(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        bob_id, me = s.bob.node.peer_id, s.mallory.peer_id
        claims = [
            (Remove(bob_id), "only owner and admins may remove"),
            (SetRole(me, GroupRole.ADMIN), "only owner and admins may set role"),
            (Add(IdentityKey.generate().peer_id, GroupRole.ADMIN, "sock puppet"),
             "cannot give a role above one's own"),
        ]
        for body, reason in claims:
            event = s.mallory.forge(s.gid, body)  # each one at the same, still free, seq
            await s.mallory.send(s.gid, event)
            one_line(await logs.wait_for(rejected_line(me, reason), level=logging.WARNING))
            assert not s.stored(event)
        await s.barrier()
        assert s.core.state.members == {
            s.alice.node.peer_id: GroupRole.OWNER, bob_id: GroupRole.MEMBER,
            me: GroupRole.MEMBER,
        }
        assert s.alice.service.store.equivocations(s.gid) == []
        await s.still_serving()


# -- 4. replays ----------------------------------------------------------------------------


async def test_replayed_events_are_acked_again_and_stored_once(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        members = s.honest
        key_event = s.mallory.sender_key(s.gid, members)
        said = s.mallory.say(s.gid, "once")
        await s.mallory.share(s.gid, key_event, said)
        await s.mallory.wait_until(lambda: s.mallory.times_acked(said.id) == 1)
        count = s.alice.service.store.count_events(s.gid)
        mark = len(logs.caplog.records)

        await s.mallory.send(s.gid, said)
        await s.mallory.send(s.gid, said, key_event)
        await s.mallory.send(s.gid, *[said] * MAX_EVENTS)
        replayed = s.history()  # everybody's events, replayed by her
        assert said in replayed and key_event in replayed
        await s.mallory.send(s.gid, *replayed)
        await s.mallory.wait_until(lambda: s.mallory.times_acked(said.id) == 5)

        assert s.mallory.times_acked(key_event.id) == 3
        assert s.mallory.acks[-1].ids == tuple(e.id for e in replayed)
        assert s.alice.service.store.count_events(s.gid) == count
        assert s.alice_texts().count("once") == 1
        assert warnings_since(logs, mark) == []  # no error storm
        group_lines = [r for r in logs.caplog.records[mark:] if r.name == GROUP_LOG]
        assert group_lines == []
        await s.still_serving()


# -- 5. sender keys: a future epoch, a huge index ------------------------------------------


async def test_message_from_a_future_epoch(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        await s.share_sender_key()
        future = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(64)), epoch=7,
                                 signer=nacl.signing.SigningKey.generate())
        await s.mallory.send(s.gid, future)
        one_line(await logs.wait_for(
            rejected_line(s.mallory.peer_id, "no sender key of its author for epoch 7"),
            level=logging.WARNING))
        await s.barrier()
        assert not s.stored(future)
        await s.still_serving()


async def test_message_with_a_huge_index(
    tmp_path: Path, logs: LogWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        members = s.honest
        await s.mallory.share(s.gid, s.mallory.sender_key(s.gid, members),
                              s.mallory.say(s.gid, "index 0"))
        await wait_text(s.alice, s.group, "index 0")

        derivations = []
        for name in ("next_chain_key", "message_key"):
            real = getattr(sender_keys, name)
            monkeypatch.setattr(sender_keys, name,
                                lambda ck, _real=real, _n=name: derivations.append(_n) or _real(ck))
        index = 1 + MAX_JUMP + 1  # alice's chain for mallory is at 1
        # properly signed by mallory's sender key: it passes the core, only decryption refuses
        huge = s.mallory.replicas[s.gid].author(PrivateMessage(index, os.urandom(64)))
        await s.mallory.send(s.gid, huge)
        await s.barrier()
        line = logs.matching(
            rf"^group lab: cannot decrypt {huge.id.hex()[:12]} from {s.mallory.short}: "
            rf"group message index {index} is {MAX_JUMP + 1} ahead of 1, "
            rf"more than the {MAX_JUMP} allowed$", level=logging.WARNING)
        assert len(line) == 1
        one_line(line)
        assert derivations == []  # refused before any hashing
        monkeypatch.undo()
        assert s.stored(huge) and s.mallory.times_acked(huge.id) == 1  # a valid event
        await s.mallory.share(s.gid, huge)  # bob needs it: alice's next events depend on it

        [view] = [v for v in s.alice.log(s.group) if v["id"] == huge.id.hex()]
        assert view["text"] is None and view["decrypted"] is False
        # her chain on alice was not advanced: her next real message (index 1) still reads
        await s.mallory.share(s.gid, s.mallory.say(s.gid, "index 1"))
        await wait_text(s.alice, s.group, "index 1")
        await s.still_serving()


# -- 6. unknown groups ---------------------------------------------------------------------


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
        for replica, events in groups:
            await s.mallory.send(replica.core.group_id, *events)
            gid = replica.core.group_id.hex()[:12]
            one_line(await logs.wait_for(
                rf"^events from {s.mallory.short} for group {gid}, which we are not in: "
                rf"holding {len(events)}$", logger=GROUP_LOG))
            assert len(s.alice.service._pending) <= MAX_PENDING_GROUPS
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
                                 signer=nacl.signing.SigningKey.generate())
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
        pending = s.alice.service._pending[other]
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
        assert other in s.alice.service._pending
        # handled before the barrier's ack: a line would be there already
        lines = logs.matching(rf"for group {other.hex()[:12]}", logger=GROUP_LOG)
        assert lines
        one_line(lines)


# -- 7. absurd clocks ----------------------------------------------------------------------


def fake_peers(n: int) -> tuple[tuple[PeerId, int], ...]:
    return tuple((PeerId(b"\x00" + i.to_bytes(31, "big")), 1) for i in range(n))


async def test_clock_with_too_many_entries_or_absurd_counters(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        await s.share_sender_key()
        base = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(40)),
                               signer=s.mallory.sender_signing_key(s.gid))
        cases = {
            "clock delta of 513 entries exceeds 512":
                {"clock": fake_peers(MAX_CLOCK_ENTRIES + 1)},
            "clock delta of 2000 entries exceeds 512": {"clock": fake_peers(2000)},
            r"clock seq must be an integer in 1\.\.2\^40":
                {"clock": ((fake_peers(1)[0][0], MAX_COUNTER),)},
            r"seq must be an integer in 1\.\.2\^40": {"seq": MAX_COUNTER},
            r"lamport must be an integer in 1\.\.2\^40": {"lamport": 2**64 - 1},
        }
        for reason, fields in cases.items():
            bad = replace(base.unsigned, **fields)
            await s.mallory.send(s.gid, bad.signed(s.mallory.sender_signing_key(s.gid).sign(
                bad.signing_bytes()).signature))
            one_line(await logs.wait_for(
                rf"^dropping an event from {s.mallory.short}: {reason}$", level=logging.WARNING))
        await s.barrier()
        await s.still_serving()


async def test_clock_naming_events_that_do_not_exist_waits_bounded(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        waits = await send_waiting(s)
        assert s.core.buffered() == {s.mallory.peer_id: [waits.seq]}
        assert s.mallory.times_acked(waits.id) == 0 and not s.stored(waits)
        await s.still_serving()
        assert s.core.buffered() == {s.mallory.peer_id: [waits.seq]}  # still waiting, alone
        assert [g["waiting"] for g in s.alice.groups()] == [1]


async def test_a_replay_of_an_event_still_waiting_is_not_acked(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        waits = await send_waiting(s)
        await s.mallory.send(s.gid, waits)
        await s.barrier()
        assert not s.stored(waits)
        assert s.mallory.times_acked(waits.id) == 0


async def send_waiting(s: Scene) -> Event:
    """Mallory's valid, signed message that depends on bob's event 10^6: it waits.

    (10^6, not 2^40 - 1: ``GroupCore.gaps`` still costs memory in proportion.)
    """
    await s.join()
    await s.share_sender_key()
    waits = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(40)),
                            signer=s.mallory.sender_signing_key(s.gid),
                            clock=((s.bob.node.peer_id, 10**6),), lamport=10**6 + 100)
    await s.mallory.send(s.gid, waits)
    await s.barrier()
    return waits


# -- 8. a causal gap that never fills ------------------------------------------------------


async def test_a_gap_that_never_fills_keeps_the_buffer_bounded(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        replica = await s.join()
        withheld = replica.new_sender_key()  # never sent: everything after it waits
        events = [replica.say(f"w{i}") for i in range(2000)]
        for start in range(0, len(events), MAX_EVENTS):
            await s.mallory.send(s.gid, *events[start:start + MAX_EVENTS])
        await s.barrier()
        assert s.core.buffered() == {
            s.mallory.peer_id: [withheld.seq + 1 + i for i in range(MAX_BUFFER_PER_AUTHOR)]
        }
        dropped = logs.matching(
            rf"^group lab: dropped (\d+) event\(s\) from {s.mallory.short}: too many events "
            r"waiting for their causal past$", logger=GROUP_LOG)
        # one summary line per message, adding up to every event that did not fit
        counts = [int(re.search(r"dropped (\d+)", line).group(1)) for line in dropped]  # type: ignore[union-attr]
        assert sum(counts) == len(events) - MAX_BUFFER_PER_AUTHOR
        assert len(dropped) <= -(-len(events) // MAX_EVENTS)
        one_line(dropped)
        assert s.mallory.times_acked(events[0].id) == 0
        await s.still_serving()


async def test_junk_from_made_up_authors_cannot_stop_the_group(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        # mallory needs no membership: a private message of a made-up author cannot be
        # verified before its (never coming) SENDER_KEY, so it is let into the buffer
        junk: list[bytes] = []
        for _ in range(MAX_BUFFER // MAX_BUFFER_PER_AUTHOR + 1):
            author = PeerId(os.urandom(32))
            for seq in range(2, 2 + MAX_BUFFER_PER_AUTHOR):
                junk.append(UnsignedEvent(s.gid, author, seq, 0, (), 9, Kind.MESSAGE,
                                          b"").signed(bytes(64)).raw)
        for start in range(0, len(junk), MAX_EVENTS):
            await s.mallory.send(s.gid, *junk[start:start + MAX_EVENTS])
        await s.barrier()
        assert len(s.core.waiting()) == MAX_BUFFER
        said = await s.bob_says_relayed("can alice still hear me?")
        assert s.core.has(said.author, said.seq)
        await s.still_serving()


# -- 9. malformed wire messages ------------------------------------------------------------


def _dup_keys(gid: bytes) -> bytes:
    return b"\x84" + b"".join(pack(x) for x in ("t", "events", "g", gid, "ev", [], "t", "ack"))


MALFORMED: dict[str, tuple[Any, str]] = {
    "not msgpack": (lambda gid: b"\xc1\xc1", "malformed msgpack"),
    "empty": (lambda gid: b"", "malformed msgpack"),
    "trailing bytes": (
        lambda gid: encode_message(EventsMessage(GroupId(gid), ())) + b"\x00", "trailing bytes",
    ),
    "an array": (lambda gid: pack(["events", gid, []]), "peer message is not a map"),
    "duplicate keys": (_dup_keys, "duplicate map key 't'"),
    "extension type": (
        lambda gid: msgpack.packb(msgpack.ExtType(5, b"x")), "extension type 5 is not allowed",
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
        lambda gid: pack({"t": "events", "g": gid, "ev": []}), "peer message keys must be",
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
    """Each one is dropped with a line; the channel stays up (it is still the same one)."""
    async with scene(tmp_path) as s:
        channel = s.alice.node.connections[s.mallory.peer_id]
        for name, (make, reason) in MALFORMED.items():
            await s.mallory.send_data(make(s.gid))
            line = await logs.wait_for(rf"^dropping message from {s.mallory.short}: .*{reason}",
                                       level=logging.WARNING)
            one_line(line)
            await s.barrier()
            assert s.alice.node.connections.get(s.mallory.peer_id) is channel, name
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
        lines = await logs.wait_for(rf"^dropping an event from {s.mallory.short}: ", count=4,
                                    level=logging.WARNING)
        one_line(lines)
        await s.mallory.wait_until(lambda: s.mallory.times_acked(said.id) == 1)
        assert s.mallory.acks[-1].ids == (key_event.id, said.id)  # the good ones got through
        await wait_text(s.alice, s.group, "between the junk")
        await s.mallory.share(s.gid, key_event, said)
        await s.still_serving()


async def test_acks_for_events_that_do_not_exist_are_not_recorded(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:  # mallory is not even a member
        group = s.a_group
        before = len(group.acked), len(group.sessions), s.deliveries()
        for _ in range(8):
            ids = tuple(EventId(os.urandom(32)) for _ in range(MAX_EVENTS))
            await s.mallory.send_data(encode_message(AckMessage(s.gid, ids)))
        await s.barrier()
        assert s.deliveries() == before[2]  # nothing stored ...
        assert (len(group.acked), len(group.sessions)) == before[:2]  # ... nor kept
        await s.still_serving()


# -- 10. equivocation ----------------------------------------------------------------------


async def test_equivocation_is_rejected_and_recorded(tmp_path: Path, logs: LogWatch) -> None:
    async with scene(tmp_path) as s:
        await s.join()
        await s.share_sender_key()
        twin = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(64)),
                               signer=s.mallory.sender_signing_key(s.gid))
        first = s.mallory.say(s.gid, "the first")
        assert (twin.seq, twin.author) == (first.seq, first.author) and twin.id != first.id
        await s.mallory.share(s.gid, first)
        await wait_text(s.alice, s.group, "the first")
        await s.mallory.send(s.gid, twin)
        one_line(await logs.wait_for(
            rf"^group lab: {s.mallory.short} signed two different events with seq {first.seq} "
            r"\(equivocation\); keeping the first$", level=logging.WARNING))
        await s.barrier()
        [(author, seq, kept, second_raw, _at)] = s.alice.service.store.equivocations(s.gid)
        assert (author, seq, kept, second_raw) == (s.mallory.peer_id, first.seq, first.id,
                                                   twin.raw)
        assert not s.stored(twin) and s.mallory.times_acked(twin.id) == 0
        assert s.alice_texts().count("the first") == 1
        # the same equivocation again is not recorded twice
        await s.mallory.send(s.gid, twin)
        await s.barrier()
        assert len(s.alice.service.store.equivocations(s.gid)) == 1
        await s.still_serving()


async def test_a_forgery_cannot_frame_a_member_as_an_equivocator(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        s.mallory.mirror(s.gid, s.history())  # no membership needed
        bob_id = s.bob.node.peer_id
        # "bob's" next event, unsigned, with a dependency that never comes (it would wait)
        frame = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(64)), author=bob_id,
                                clock=fake_peers(1)).unsigned.signed(bytes(64))
        await s.mallory.send(s.gid, frame)
        one_line(await logs.wait_for(rejected_line(bob_id, "bad signature$"),
                                     level=logging.WARNING))
        await s.barrier()
        assert s.core.buffered() == {}
        said = await s.bob_says_relayed("my real event for that seq")
        assert said.seq == frame.seq
        assert s.alice.service.store.equivocations(s.gid) == []
        assert s.core.has(bob_id, said.seq)
        await s.still_serving()


async def test_an_unverifiable_forgery_cannot_silence_a_member(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        s.mallory.mirror(s.gid, s.history())  # no membership needed
        bob_id = s.bob.node.peer_id
        # "bob's" next event in an epoch nobody has a key for: it cannot be checked yet,
        # and with a dependency that never comes it waits for ever
        frame = s.mallory.forge(s.gid, PrivateMessage(0, os.urandom(64)), author=bob_id,
                                epoch=99, clock=fake_peers(1)).unsigned.signed(bytes(64))
        await s.mallory.send(s.gid, frame)
        await s.barrier()
        assert s.core.buffered() == {bob_id: [frame.seq]}
        said = await s.bob_says_relayed("my real event for that seq")
        assert said.seq == frame.seq
        assert s.core.has(bob_id, said.seq)
        await s.still_serving()


async def test_a_forged_copy_of_a_delivered_event_is_not_an_equivocation(
    tmp_path: Path, logs: LogWatch
) -> None:
    async with scene(tmp_path) as s:
        s.mallory.mirror(s.gid, s.history())  # no membership needed
        bob_id = s.bob.node.peer_id
        last = s.core.event_id(bob_id, s.core.frontier[bob_id])
        [real] = [e for e in s.history() if e.id == last]
        forged = replace(real.unsigned, body=encode_body(PrivateMessage(0, os.urandom(64))))
        await s.mallory.send(s.gid, forged.signed(bytes(64)))
        one_line(await logs.wait_for(rejected_line(bob_id, "bad signature$"),
                                     level=logging.WARNING))
        await s.barrier()
        assert s.alice.service.store.equivocations(s.gid) == []
        assert not logs.matching("equivocation")
        await s.still_serving()
