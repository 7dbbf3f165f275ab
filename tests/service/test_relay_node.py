"""A relay node over the real driver: loopback TCP, Noise, SQLite files, in one process.

A relay-only node (``Config.relay``) takes a group when an admin designates it, stores
and forwards it, refuses to author; members with relay fanout send through it; a member
added while offline, that meets only the relay, learns of the group and reads what was
sent meanwhile (the Mailbox case)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.api.python import Kith, open_node
from node.cli.common import only_error
from node.datadir import DataDir
from node.errors import ConfigError, KithError
from node.group.events import Event, Kind
from node.group.relaying import Relay
from node.ids import GroupId, PeerId, format_peer_id
from node.service.commands import RELAY_NODE_REFUSAL
from node.service.groups import ASKED_UNKNOWN
from node.wire.messages import EventsMessage, VectorMessage, encode_message

SOON = 10.0


def identity(tmp: Path, name: str) -> str:
    """The peer id of the node that will run on ``tmp / name`` (created now)."""
    return format_peer_id(DataDir(tmp / name).load_or_create_identity().peer_id)


async def connected(nodes: list[Kith]) -> None:
    with trio.fail_after(SOON):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    await a.wait_for_peer(b.peer_id)


async def texts(node: Kith, group: str, count: int) -> list[str | None]:
    """Wait until ``node`` reads ``count`` messages of ``group``; their texts in order."""
    with trio.fail_after(SOON):
        g = await node.group(group)
        await node.service.wait_until(
            lambda: sum(1 for e in g.core.ordered()
                        if e.kind is Kind.MESSAGE and g.texts.get(e.id) is not None) >= count)
    return [e["text"] for e in node.log(group) if e["kind"] == "message"]


@asynccontextmanager
async def node(stack: AsyncExitStack, tmp: Path, name: str, *peers: Kith,
               **config: object) -> AsyncIterator[Kith]:
    async with open_node(tmp / name, name=name, peers=[p.listen for p in peers],
                         **config) as kith:
        yield kith


@pytest.mark.parametrize("mode", ["private", "pairwise"])
async def test_relay_fanout_and_refusals(tmp_path: Path, mode: str) -> None:
    async with AsyncExitStack() as stack:
        # (fast beats: a relay must come through every periodic chore of a node)
        relay = await stack.enter_async_context(node(
            stack, tmp_path, "relay", relay=True, receipt_interval=0.01, sync_interval=0.05))
        alice = await stack.enter_async_context(
            node(stack, tmp_path, "alice", relay, fanout="relay"))
        bob = await stack.enter_async_context(node(stack, tmp_path, "bob", relay, alice))
        await connected([relay, alice, bob])
        group = alice.create_group("lab", mode=mode)
        alice.add(group, bob.peer_id)
        info = alice.relay(group, relay.peer_id)
        assert "relay of the group" in info["info"]
        with trio.fail_after(SOON):
            r = await relay.group(group)
        assert isinstance(r, Relay)
        alice.send(group, "through the relay")
        assert (await texts(bob, group, 1))[-1] == "through the relay"
        with trio.fail_after(SOON):
            await relay.service.wait_until(lambda: r.fanned >= 1)
        assert all(t is None for t in r.texts.values()) and not r.keys.peers
        view = next(g for g in relay.groups() if g["id"].startswith(group[:12]))
        assert view["relaying"] and view["relay"]["events"] >= 4 and view["role"] is None
        with pytest.raises(KithError, match="this node is a relay"):
            relay.send(group, "hi")
        with pytest.raises(KithError, match="this node is a relay"):
            relay.create_group("mine")
        with pytest.raises(KithError, match="only owner and admins"):
            bob.relay(group, relay.peer_id, on=False)
        alice.relay(group, relay.peer_id, on=False)
        b = await bob.group(group)
        with trio.fail_after(SOON):  # (once a member knows, it sends the relay nothing new)
            await relay.service.wait_until(lambda: not r.designated)
            await bob.service.wait_until(lambda: not b.core.state.relays)
        held = r.core.delivered_count()
        bob.send(group, "after")
        assert (await texts(alice, group, 2))[-1] == "after"
        assert r.core.delivered_count() == held
    assert RELAY_NODE_REFUSAL.startswith("this node is a relay")


@pytest.mark.parametrize("restart", [False, True])
async def test_member_added_while_offline_meets_only_the_relay(tmp_path: Path,
                                                               restart: bool) -> None:
    """Bob is added while offline; alice sends, designates the relay, goes away (and the
    relay restarts, from its store); bob comes up connected only to the relay and reads
    everything, in order."""
    bob_id = identity(tmp_path, "bob")
    async with AsyncExitStack() as outer:
        relay_ctx = AsyncExitStack()
        relay = await relay_ctx.enter_async_context(
            node(relay_ctx, tmp_path, "relay", relay=True))
        async with AsyncExitStack() as stack:
            alice = await stack.enter_async_context(node(stack, tmp_path, "alice", relay))
            await connected([relay, alice])
            group = alice.create_group("lab", mode="pairwise")
            alice.add(group, bob_id)
            alice.relay(group, relay.peer_id)
            for k in range(3):
                alice.send(group, f"while you were away {k}")
            with trio.fail_after(SOON):
                r = await relay.group(group)
                g = await alice.group(group)
                await relay.service.wait_until(
                    lambda: r.core.delivered_count() == g.core.delivered_count()
                    and sum(bob_id == format_peer_id(p)
                            for h in r.held.values() for p in h) == 3)
            order = [e.id for e in g.core.ordered()]
        if restart:
            await relay_ctx.aclose()
            relay_ctx = AsyncExitStack()
            relay = await relay_ctx.enter_async_context(
                node(relay_ctx, tmp_path, "relay", relay=True))
            r = await relay.group(group)
            assert isinstance(r, Relay) and r.designated and len(r.held) == 3
        outer.push_async_callback(relay_ctx.aclose)
        bob = await outer.enter_async_context(node(outer, tmp_path, "bob", relay))
        await connected([relay, bob])
        assert await texts(bob, group, 3) == [f"while you were away {k}" for k in range(3)]
        b = await bob.group(group)
        assert [e.id for e in b.core.ordered()] == order


class FakeLink:
    """A peer link that records what the node sends back."""

    def __init__(self, peer: PeerId) -> None:
        self.peer = peer
        self.sent: list[bytes] = []

    @property
    def info(self) -> FakeLink:
        return self

    @property
    def peer_id(self) -> PeerId:
        return self.peer

    def send_nowait(self, data: bytes) -> bool:
        self.sent.append(data)
        return True


async def test_relay_survives_garbage_forgeries_and_floods(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(node(stack, tmp_path, "relay", relay=True))
        alice = await stack.enter_async_context(
            node(stack, tmp_path, "alice", relay, fanout="relay"))
        bob = await stack.enter_async_context(node(stack, tmp_path, "bob", relay))
        await connected([relay, alice])  # bob meets alice only through the relay
        await connected([relay, bob])
        group = alice.create_group("lab", mode="private")
        alice.add(group, bob.peer_id)
        alice.relay(group, relay.peer_id)
        with trio.fail_after(SOON):
            r = await relay.group(group)
            await relay.service.wait_until(lambda: r.designated)
        service = relay.service
        stranger = FakeLink(PeerId(b"\x07" * 32))
        link = service.on_message
        await link(stranger, b"\xc1 not msgpack")  # type: ignore[arg-type]
        await link(stranger, encode_message(  # type: ignore[arg-type]
            EventsMessage(GroupId(b"\x01" * 32), (b"junk",))))
        for k in range(2 * ASKED_UNKNOWN):  # a flood of offers of unknown groups
            vv = VectorMessage(GroupId(k.to_bytes(32, "big")), ((PeerId(b"\x02" * 32), 1),))
            await link(stranger, encode_message(vv))  # type: ignore[arg-type]
        assert len(stranger.sent) == 2 * ASKED_UNKNOWN  # each answered once...
        await link(stranger, encode_message(vv))  # type: ignore[arg-type]
        assert len(stranger.sent) == 2 * ASKED_UNKNOWN  # ...not again
        assert len(service._asked_unknown) <= ASKED_UNKNOWN  # and remembered, bounded
        # a forged event for the group it relays (alice's CREATE with a changed signature)
        first = r.core.ordered()[0]
        forged = Event(first.unsigned, bytes(64))
        before = r.core.delivered_count()
        await link(stranger, encode_message(  # type: ignore[arg-type]
            EventsMessage(r.id, (forged.raw,), fanout=True)))
        assert r.core.delivered_count() == before
        alice.send(group, "still relaying")
        assert (await texts(bob, group, 1))[-1] == "still relaying"


async def test_relay_takes_at_most_its_number_of_groups(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            node(stack, tmp_path, "relay", relay=True, relay_max_groups=1))
        alice = await stack.enter_async_context(
            node(stack, tmp_path, "alice", relay, fanout="relay"))
        bob = await stack.enter_async_context(node(stack, tmp_path, "bob", relay, alice))
        await connected([relay, alice, bob])
        first, second = (alice.create_group(name) for name in ("one", "two"))
        for group in (first, second):
            alice.add(group, bob.peer_id)
        alice.relay(first, relay.peer_id)
        with trio.fail_after(SOON):
            r = await relay.group(first)
        alice.relay(second, relay.peer_id)  # pushed to the relay before the message below
        alice.send(first, "one")
        with trio.fail_after(SOON):
            await relay.service.wait_until(lambda: r.fanned >= 1)
        assert [g["name"] for g in relay.groups()] == ["one"]
        assert (await texts(bob, second, 0)) == []  # (the group goes on without it)
        alice.send(second, "two")
        assert (await texts(bob, second, 1)) == ["two"]


async def test_a_members_data_directory_cannot_run_as_a_relay(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        alice.create_group("lab")
    with pytest.raises(BaseExceptionGroup) as caught:  # (as trio's nurseries wrap it)
        async with open_node(tmp_path / "alice", name="alice", relay=True):
            pass
    error = only_error(caught.value)
    assert isinstance(error, ConfigError)
    assert "a relay (--relay) needs a data directory of its own" in str(error)
