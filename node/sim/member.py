"""One simulated member: the real member core (``node.group.member``) on the simulated LAN.

Theory of operation
-------------------
This module holds no protocol: it feeds the member core the inputs a node's
driver would (``Received``, ``PeerUp``, ``Tick``, commands) at the
scheduler's time, and runs the effects as the simulation needs them:

* ``Send`` goes to ``outbox`` with the exact size of the real message it
  stands for (``node.sim.wire.size_of``, computed once per shared payload);
  the simulation hands the outbox to the network;
* ``Wake`` becomes a scheduler timer that ticks the core;
* ``Notify`` tells which events were delivered or became readable: the
  research counters (when each message was read, rekeying, progress) are read
  off them. ``Persist`` effects are ignored: the simulation does not crash.

Key material and nonces come from the injected ``random.Random``, except the
ephemeral keys of sealed boxes (libsodium offers no way to inject them):
those change ciphertext bytes, never sizes, counts or order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from node.crypto.keys import IdentityKey
from node.group import commands as C
from node.group import keys as K
from node.group.bodies import Body, SenderKey, decode_body
from node.group.events import Event, EventId, GroupId, Kind
from node.group.member import Member as Core
from node.group.member_io import (
    Authored,
    Effect,
    Events,
    Input,
    Notify,
    PeerUp,
    Received,
    Send,
    SendMany,
    Tick,
    Wake,
)
from node.group.state import GroupCore
from node.ids import PeerId
from node.sim.clock import Scheduler
from node.sim.counting import Outgoing, Stats, count_verifications
from node.sim.wire import Frame, Payload, size_of


class _NetLinks:
    """The core's set of connected peers, as a live view of the simulated network."""

    def __init__(self, connected: Callable[[PeerId], bool],
                 peers: Callable[[], list[PeerId]]) -> None:
        self._connected, self._peers = connected, peers

    def __contains__(self, peer: object) -> bool:
        return self._connected(peer)  # type: ignore[arg-type]  # (hot: once per copy)

    def __iter__(self) -> Iterator[PeerId]:
        return iter(self._peers())

    def add(self, peer: PeerId) -> None:
        pass

    def discard(self, peer: PeerId) -> None:
        pass


class Member:
    def __init__(
        self, identity: IdentityKey, core: GroupCore, scheduler: Scheduler, rng: random.Random,
        connected: Callable[[PeerId], bool], peers: Callable[[], list[PeerId]],
        core_class: type[Core] = Core,  # a relay's core (node.sim.relay) is a Core too
    ) -> None:
        self.identity = identity
        self.me = identity.peer_id
        self.scheduler = scheduler
        self.m = core_class(identity, core, rng.randbytes, joined_at=scheduler.now)
        self.m.connected = _NetLinks(connected, peers)
        self.outbox: list[Outgoing] = []  # (to, payload, size, kind)
        self.stats = Stats()
        self.read_at: dict[EventId, float] = {}  # messages we could read, and when
        self._wake: float | None = None
        #: Set by the simulation: hands ``outbox`` to the network (used by timers).
        self.flush_outbox: Callable[[], None] = lambda: None
        count_verifications(self.core, self.stats, self.me)

    @property
    def core(self) -> GroupCore:
        return self.m.core

    @property
    def keys(self) -> K.GroupKeys:
        return self.m.keys

    @property
    def group(self) -> GroupId:
        return self.m.id

    def set_up(self, members: frozenset[PeerId], frontier: dict[PeerId, int]) -> None:
        """The state after set-up: everyone holds every set-up event; nothing counted."""
        self.outbox.clear()
        self.m.setup_members = members
        self.m.setup_frontier = frontier
        self.stats.rekey_events = self.stats.rekey_seals = 0

    # -- inputs --

    def send(self, text: str) -> tuple[Event, K.Counters]:
        """Author one message; its copies go to ``outbox``."""
        effects = self.m.handle(C.SendText(text), self.scheduler.now)
        event = self._run(effects)
        if event is None:
            raise ValueError(f"not sent: {effects}")
        return event, self.m.counters[event.id]

    def rotate(self) -> Event:
        """A fresh sender key sealed to every other member (set-up)."""
        event = self._run(self.m.handle(C.RotateKey(), self.scheduler.now))
        assert event is not None
        return event

    def author(self, body: Body) -> Event:
        event = self._run(self.m.handle(C.AuthorBody(body), self.scheduler.now))
        assert event is not None
        return event

    def add(self, peer: PeerId) -> Event:
        event = self._run(self.m.handle(C.AddMember(peer), self.scheduler.now))
        assert event is not None
        return event

    def on_message(self, sender: PeerId, payload: Payload) -> None:
        assert not isinstance(payload, Frame)  # raw mode has no members
        self._handle(Received(sender, payload))

    def link_up(self, peer: PeerId) -> None:
        self._handle(PeerUp(peer))

    def _tick(self) -> None:
        self._wake = None
        self._handle(Tick())
        self.flush_outbox()

    def _handle(self, input: Input) -> None:
        self._run(self.m.handle(input, self.scheduler.now))

    # -- effects --

    def _run(self, effects: list[Effect]) -> Event | None:
        now = self.scheduler.now
        sized: dict[int, tuple[int, K.Counters | None]] = {}  # per payload: shared by many
        authored = None
        outbox = self.outbox
        for effect in effects:
            kind = type(effect)  # one dispatch on the type: this loop is the hot path
            if kind is Send or kind is SendMany:
                assert isinstance(effect, Send | SendMany)
                payload = effect.payload
                known = sized.get(id(payload))
                if known is None:
                    counters = None
                    if effect.kind == "message" and isinstance(payload, Events):
                        counters = self.m.counters.get(payload.events[0].id)
                    known = sized[id(payload)] = (size_of(self.group, payload), counters)
                size, counters = known
                peers = (effect.peer,) if isinstance(effect, Send) else effect.peers
                outbox.extend((peer, payload, size, effect.kind) for peer in peers)
                if counters is not None:  # what the author queued, as a node counts it
                    counters.bytes_out += size * len(peers)
            elif kind is Notify:
                assert isinstance(effect, Notify)
                if effect.events:
                    self._notice(effect.events, now)
            elif kind is Wake:
                assert isinstance(effect, Wake)
                if self._wake is None or effect.at < self._wake:
                    self._wake = effect.at
                    self.scheduler.at(max(effect.at, now), self._tick)
            elif kind is Authored and authored is None:
                assert isinstance(effect, Authored)
                authored = effect.event
        self.stats.rejected, self.stats.dropped = self.m.rejected, self.m.dropped
        return authored

    def _notice(self, events: tuple[Event, ...], now: float) -> None:
        for event in events:
            self.stats.last_progress = now
            if event.kind is Kind.MESSAGE and event.id not in self.read_at and (
                    event.id in self.m.contents):
                self.read_at[event.id] = now
                if event.author != self.me:
                    self.stats.decrypted += 1
            elif event.kind is Kind.SENDER_KEY and event.author == self.me:
                body = decode_body(Kind.SENDER_KEY, event.body)
                assert isinstance(body, SenderKey)
                self.stats.rekey_events += 1
                # committed: one sealed copy per recipient beside it; inline: in the body
                self.stats.rekey_seals += len(body.keys) + len(self.m.own_copies.get(event.id, {}))
