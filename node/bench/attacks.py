"""What a hostile peer sends a node, one attack at a time (``kith bench hostile``).

Theory of operation
-------------------
Each attack is an async function ``run(target, budget, held) -> Sent``: it
opens channels to the node under attack (``node.bench.hostile_peer``), sends
about ``budget`` bytes in its own way, waits until the node has handled all of
it (a ``barrier`` per channel), awaits ``held()`` while its channels are still
open (the benchmark reads the node's memory then), and closes them. Everything
is sent as a modified client would: valid channels, and inside them bytes that
are valid where that makes the node hold more (signed events of groups the
attacker founds itself) and malformed where that makes it work.

* ``unknown-groups``: one identity founds 16 groups of its own and sends
  each one its share of the budget as large signed messages (60 kB each): the
  node cannot verify whether it is being invited, so it buffers them
  (``node.group.invitations``).
* ``malformed``: a flood of small malformed application messages (bad msgpack,
  wrong shapes, junk events), each dropped with a log line.
* ``sync``: the identity the node added to its group sends version vectors:
  empty ones, ones that change every time, and 20,000-author ones; it reads and
  acknowledges everything the node streams back.
* ``channels``: many completed channels, each from a new throwaway identity,
  all held open at once (the budget is not used: see ``--channels``).
* ``junk``: messages at the 1 MiB channel cap that are junk: random bytes, a
  map with a huge field, 256 undecodable events.
* ``decode-bombs``: messages at the cap that are valid msgpack, an array of a
  million empty maps or arrays (1 byte each on the wire, a Python object of
  about 64 bytes each once decoded, before any schema check can refuse them).
* ``sybil-groups``: ``unknown-groups`` from one identity per group the node
  may hold (``MAX_GROUPS``), all connected at once: the per-peer byte cap
  applies to each.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from node.bench.hostile_peer import HostilePeer, RefusedError, hostile_peer
from node.bench.victim import Victim
from node.crypto.keys import IdentityKey
from node.group.events import Event
from node.group.invitations import MAX_GROUPS
from node.ids import GroupId, PeerId
from node.testing.groups import Replica
from node.wire.messages import (
    MAX_VECTOR,
    EventsMessage,
    TypingMessage,
    VectorMessage,
    encode_message,
)
from node.wire.strict import pack

#: The largest application message a node accepts (``Config.max_message_size``).
MESSAGE_CAP = 1024 * 1024
#: Text of one large group message: as much as a private message's ciphertext may hold.
BIG_TEXT = "x" * 60_000
#: Events of ``BIG_TEXT`` per ``events`` message (16 x 60 kB stays under the cap).
PER_MESSAGE = 16


@dataclass(frozen=True, slots=True)
class Target:
    """The node under attack, and the group it runs with ``member`` in it."""

    node: Victim
    member: IdentityKey
    group: GroupId
    #: The node's own peer id (the author of the group's history).
    author: PeerId
    #: Events of the group's history (what a sync may stream).
    history: int
    #: Channels the ``channels`` attack opens.
    channels: int


@dataclass(slots=True)
class Sent:
    """What an attack sent and drew, and the identities whose channels it opened."""

    bytes: int = 0
    received: int = 0
    messages: int = 0
    refused: int = 0
    peers: list[str] = field(default_factory=list)

    def add(self, peer: HostilePeer) -> None:
        self.bytes += peer.bytes_sent
        self.received += peer.bytes_received
        self.messages += peer.messages_sent
        self.peers.append(peer.short)


Held = Callable[[], Awaitable[None]]
Attack = Callable[[Target, int, Held], Awaitable[Sent]]


# -- events for groups the node is not in ----------------------------------------------------


def own_groups(key: IdentityKey, groups: int, budget: int) -> Iterator[tuple[GroupId, bytes]]:
    """``events`` messages of ``groups`` new groups founded by ``key``, ``budget`` bytes in
    all: each a CREATE, a SENDER_KEY and large signed private messages."""
    share = budget // groups
    for _ in range(groups):
        replica, create = Replica.founding(key)
        gid = replica.core.group_id
        batch: list[Event] = [create, replica.new_sender_key()]
        size = 0  # bytes of the messages sent (events travel without their group id)
        while size < share:
            batch.append(replica.say(BIG_TEXT))
            if len(batch) >= PER_MESSAGE:
                data = encode_message(EventsMessage(gid, tuple(e.raw for e in batch)))
                size += len(data)
                yield gid, data
                batch = []
        if batch:
            yield gid, encode_message(EventsMessage(gid, tuple(e.raw for e in batch)))


async def unknown_groups(t: Target, budget: int, held: Held) -> Sent:
    sent = Sent()
    async with hostile_peer(*t.node.host_port) as peer:
        for _, data in own_groups(peer.key, 2 * MAX_GROUPS, budget):
            await peer.send(data)
        await peer.barrier()
        await held()
        sent.add(peer)
    return sent


async def sybil_groups(t: Target, budget: int, held: Held) -> Sent:
    sent = Sent()
    async with AsyncExitStack() as stack:
        peers = []
        for _ in range(MAX_GROUPS):
            peer = await stack.enter_async_context(hostile_peer(*t.node.host_port))
            for _, data in own_groups(peer.key, 1, budget // MAX_GROUPS):
                await peer.send(data)
            peers.append(peer)
        for peer in peers:
            await peer.barrier()
            sent.add(peer)
        await held()
    return sent


# -- malformed and junk messages -------------------------------------------------------------


def _junk(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def _malformed(rng: random.Random) -> bytes:
    """One small malformed application message (about 1 kB on average)."""
    gid = rng.randbytes(32)
    pad = rng.randbytes(rng.randrange(0, 2000))
    kind = rng.randrange(12)
    if kind == 0:
        return b"\xc1" + pad  # never valid msgpack
    if kind == 1:
        return encode_message(TypingMessage(GroupId(gid))) + b"\x00" + pad  # trailing bytes
    if kind == 2:
        return pack(["events", gid, [pad]])  # not a map
    if kind == 3:
        return pack({"t": "gossip", "g": gid, "x": pad})  # unknown type
    if kind == 4:
        return pack({"t": "ack", "g": gid, "ids": [pad[:31]]})  # bad id
    if kind == 5:
        return pack({"t": "typing", "g": gid, "x": pad})  # extra key
    if kind == 6:
        return pack({"t": "vv", "g": gid, "vv": [[gid, 2], [gid, 1]], "want": True})  # unsorted
    if kind == 7:  # undecodable events inside a good message
        return encode_message(EventsMessage(GroupId(gid), tuple(
            rng.randbytes(rng.randrange(1, 200)) for _ in range(rng.randrange(1, 10)))))
    if kind == 8:
        return b"\xc7\x05\x05" + pad[:5]  # an extension type
    if kind == 9:
        return b"\x82\xa1t\xa3ack\xa1t\xa3ack"  # duplicate keys
    if kind == 10:
        return b"\x91" * 2000  # deeply nested arrays
    return b""  # empty


async def malformed(t: Target, budget: int, held: Held) -> Sent:
    rng = random.Random(12)
    sent = Sent()
    async with hostile_peer(*t.node.host_port) as peer:
        while peer.bytes_sent < budget:
            await peer.send(_malformed(rng))
        await peer.barrier()
        await held()
        sent.add(peer)
    return sent


#: Size of one junk message: just under the cap.
JUNK_SIZE = MESSAGE_CAP - 64


def _big_junk(rng: random.Random, kind: int) -> bytes:
    """One junk message of ``JUNK_SIZE`` bytes or a little less."""
    gid = rng.randbytes(32)
    if kind == 0:
        return _junk(rng, JUNK_SIZE)
    if kind == 1:
        return pack({"t": "typing", "g": gid, "x": _junk(rng, JUNK_SIZE - 64)})
    # 256 events that do not decode: one complaint each
    return encode_message(EventsMessage(GroupId(gid), tuple(
        _junk(rng, JUNK_SIZE // 256 - 8) for _ in range(256))))


def _decode_bomb(rng: random.Random, kind: int) -> bytes:
    """A million empty maps (or arrays) in 1 MB: each one a Python object once decoded."""
    header = b"\xdd" + struct.pack(">I", JUNK_SIZE - 5)
    return header + (b"\x80" if kind == 0 else b"\x90") * (JUNK_SIZE - 5)


async def _send_big(t: Target, budget: int, held: Held,
                    make: Callable[[random.Random, int], bytes], kinds: int) -> Sent:
    rng = random.Random(13)
    sent = Sent()
    async with hostile_peer(*t.node.host_port) as peer:
        kind = 0
        while peer.bytes_sent < budget:
            await peer.send(make(rng, kind))
            kind = (kind + 1) % kinds
        await peer.barrier()
        await held()
        sent.add(peer)
    return sent


async def junk(t: Target, budget: int, held: Held) -> Sent:
    return await _send_big(t, budget, held, _big_junk, 3)


async def decode_bombs(t: Target, budget: int, held: Held) -> Sent:
    return await _send_big(t, budget, held, _decode_bomb, 2)


# -- sync requests and channels ----------------------------------------------------------------


def _wide_vector(rng: random.Random, group: GroupId) -> bytes:
    """A vector naming as many (made-up) authors as a vector may."""
    authors = sorted(rng.randbytes(32) for _ in range(MAX_VECTOR))
    return encode_message(VectorMessage(group, tuple(
        (PeerId(a), rng.randrange(1, 2**40)) for a in authors), want=True))


async def sync_requests(t: Target, budget: int, held: Held) -> Sent:
    rng = random.Random(14)
    sent = Sent()
    wide = _wide_vector(rng, t.group)
    async with hostile_peer(*t.node.host_port, t.member) as peer:
        k = 0
        while peer.bytes_sent < budget:
            k += 1
            if k % 16 == 0:
                await peer.send(wide)
            elif k % 2:
                await peer.send(encode_message(VectorMessage(t.group, (), want=True)))
            else:  # a vector that changed: "I have your first n events"
                seq = 1 + (k // 2) % t.history
                await peer.send(encode_message(VectorMessage(t.group, ((t.author, seq),),
                                                             want=True)))
        await peer.barrier()
        await held()
        sent.add(peer)
    return sent


async def channels(t: Target, budget: int, held: Held) -> Sent:
    sent = Sent()
    async with AsyncExitStack() as stack:
        peers = []
        for _ in range(t.channels):
            try:
                peers.append(await stack.enter_async_context(hostile_peer(*t.node.host_port)))
            except RefusedError:
                sent.refused += 1
        for peer in peers:
            try:
                await peer.barrier()
            except RefusedError:  # admitted by the handshake, then closed by the node
                sent.refused += 1
            sent.add(peer)
        await held()
    return sent


#: name -> (what it does, the attack); in the order they run.
ATTACKS: dict[str, tuple[str, Attack]] = {
    "unknown-groups": ("events for 16 groups it founded (60 kB signed messages)",
                       unknown_groups),
    "malformed": ("a flood of small malformed messages", malformed),
    "sync": ("version vectors as a member: empty, changing, 20,000 authors", sync_requests),
    "channels": ("completed channels from throwaway identities, held open", channels),
    "junk": ("1 MiB junk messages: random bytes, a huge field, 256 bad events", junk),
    "decode-bombs": ("1 MiB msgpack arrays of a million empty maps or arrays",
                     decode_bombs),
    "sybil-groups": (f"unknown-groups from {MAX_GROUPS} identities at once", sybil_groups),
}

