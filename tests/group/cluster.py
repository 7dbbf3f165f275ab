"""Several member cores wired by hand: no sockets, no clock, no SQLite.

``Cluster`` holds ``Member``s, the links between them and the messages in
flight (per direction, in order, as a TCP channel keeps them). ``transfer``
moves messages; ``settle`` runs until nothing is in flight and no timer is
due. Each member's persisted state is a ``Disk``: what its ``Persist``
effects wrote, from which ``restart`` rebuilds it exactly as a node would from
its SQLite file after a crash.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import OwnSenderKey, SenderKeyState
from node.group import commands as C
from node.group.content import Content
from node.group.events import Event, EventId, GroupId
from node.group.member import Member
from node.group.member_io import (
    Authored,
    Effect,
    EraseContent,
    Input,
    Payload,
    PeerDown,
    PeerUp,
    Received,
    Refused,
    SaveCopy,
    SaveDelivery,
    SaveEquivocation,
    SaveEvent,
    SaveOwnHistory,
    SaveOwnKey,
    SavePeerKey,
    SaveReadMarks,
    Send,
    SendMany,
    SetContent,
    SetLeft,
    SetName,
    Tick,
    Wake,
    Warn,
)
from node.group.state import GroupCore
from node.ids import PeerId


@dataclass
class Disk:
    """What one member persisted (the fields of its SQLite rows that matter here)."""

    events: list[Event] = field(default_factory=list)
    received: dict[EventId, float] = field(default_factory=dict)
    texts: dict[EventId, str | None] = field(default_factory=dict)
    contents: dict[EventId, Content | None] = field(default_factory=dict)
    own: tuple[int, OwnSenderKey, frozenset[PeerId]] | None = None
    own_history: list[tuple[int, OwnSenderKey]] = field(default_factory=list)
    peer_keys: dict[tuple[PeerId, int], SenderKeyState] = field(default_factory=dict)
    copies: dict[tuple[EventId, PeerId], bytes] = field(default_factory=dict)
    acked: dict[EventId, dict[PeerId, float]] = field(default_factory=dict)
    read_marks: dict[PeerId, int] = field(default_factory=dict)
    left: bool = False
    name: str = ""
    equivocations: int = 0

    def apply(self, effect: Effect) -> None:
        if isinstance(effect, SaveEvent):
            if effect.event.id not in self.received:
                self.events.append(effect.event)
                self.received[effect.event.id] = effect.received_at
            self.texts[effect.event.id] = effect.text
            self.contents[effect.event.id] = effect.content
        elif isinstance(effect, SetContent):
            self.texts[effect.event] = effect.text
            self.contents[effect.event] = effect.content
        elif isinstance(effect, EraseContent):
            self.texts[effect.event] = None
            self.contents[effect.event] = None
            for key in [k for k in self.copies if k[0] == effect.event]:
                del self.copies[key]
        elif isinstance(effect, SaveOwnKey):
            self.own = (effect.epoch, effect.key, effect.recipients)
        elif isinstance(effect, SaveOwnHistory):
            self.own_history.append((effect.epoch, effect.key))
        elif isinstance(effect, SavePeerKey):
            self.peer_keys[(effect.author, effect.epoch)] = effect.state
        elif isinstance(effect, SaveCopy):
            self.copies[(effect.event, effect.recipient)] = effect.blob
        elif isinstance(effect, SaveDelivery):
            self.acked.setdefault(effect.event, {})[effect.member] = effect.at
        elif isinstance(effect, SaveReadMarks):
            self.read_marks.update(effect.marks)
        elif isinstance(effect, SetLeft):
            self.left = effect.left
        elif isinstance(effect, SetName):
            self.name = effect.name
        elif isinstance(effect, SaveEquivocation):
            self.equivocations += 1


class Cluster:
    def __init__(self, n: int, mode: str = "private", seed: int = 0,
                 share_history: bool = False, policy: str = "blacklist") -> None:
        self.rng = random.Random(seed)
        self.keys = [IdentityKey(self.rng.randbytes(32)) for _ in range(n)]
        self.ids: list[PeerId] = [k.peer_id for k in self.keys]
        self.now = 1000.0
        self.disks: dict[PeerId, Disk] = {p: Disk() for p in self.ids}
        self.links: set[frozenset[PeerId]] = set()
        self.flight: dict[tuple[PeerId, PeerId], deque[Payload]] = {}
        self.wakes: dict[PeerId, list[float]] = {p: [] for p in self.ids}
        self.warnings: dict[PeerId, list[Warn]] = {p: [] for p in self.ids}
        self.refused: list[str] = []
        owner, effects = Member.found(self.keys[0], self.rng.randbytes, self.now, "test", mode,
                                      share_history=share_history,
                                      policy=policy if mode == "open" else "")
        self.group: GroupId = owner.id
        self.members: dict[PeerId, Member] = {self.ids[0]: owner}
        for p in self.ids[1:]:
            self.members[p] = Member(self.keys[self.ids.index(p)], GroupCore(self.group),
                                     self.rng.randbytes, joined_at=self.now)
        assert self.run(self.ids[0], effects) is not None, self.refused

    # -- driving --

    def run(self, peer: PeerId, effects: list[Effect]) -> Event | None:
        """Apply ``effects`` as a driver does: persist, then send, then the rest."""
        disk = self.disks[peer]
        authored = None
        for effect in effects:
            if isinstance(effect, Send):
                self.flight.setdefault((peer, effect.peer), deque()).append(effect.payload)
            elif isinstance(effect, SendMany):
                for to in effect.peers:
                    self.flight.setdefault((peer, to), deque()).append(effect.payload)
            elif isinstance(effect, Wake):
                self.wakes[peer].append(effect.at)
            elif isinstance(effect, Warn):
                self.warnings[peer].append(effect)
            elif isinstance(effect, Authored):
                authored = effect.event
            elif isinstance(effect, Refused):
                self.refused.append(effect.reason)
            else:
                disk.apply(effect)
        return authored

    def handle(self, peer: PeerId, input: Input | C.Command) -> Event | None:
        return self.run(peer, self.members[peer].handle(input, self.now))

    def do(self, peer: PeerId, command: C.Command) -> Event:
        """Run a command that must succeed; returns the event it authored."""
        effects = self.members[peer].handle(command, self.now)
        refused = [e.reason for e in effects if isinstance(e, Refused)]
        assert not refused, refused
        event = self.run(peer, effects)
        assert event is not None
        return event

    def connect(self, a: PeerId, b: PeerId) -> None:
        if frozenset((a, b)) in self.links:
            return
        self.links.add(frozenset((a, b)))
        self.handle(a, PeerUp(b))
        self.handle(b, PeerUp(a))

    def disconnect(self, a: PeerId, b: PeerId) -> None:
        if frozenset((a, b)) not in self.links:
            return
        self.links.discard(frozenset((a, b)))
        self.flight.pop((a, b), None)  # a channel that breaks loses what was in it
        self.flight.pop((b, a), None)
        self.handle(a, PeerDown(b))
        self.handle(b, PeerDown(a))

    def connect_all(self, peers: list[PeerId] | None = None) -> None:
        peers = self.ids if peers is None else peers
        for i, a in enumerate(peers):
            for b in peers[i + 1:]:
                self.connect(a, b)

    def partition(self, *sides: list[PeerId]) -> None:
        for i, a in enumerate(self.ids):
            for b in self.ids[i + 1:]:
                if not any(a in side and b in side for side in sides):
                    self.disconnect(a, b)

    def transfer(self, src: PeerId, dst: PeerId) -> bool:
        """Deliver the oldest message from ``src`` to ``dst``; False if none."""
        queue = self.flight.get((src, dst))
        if not queue:
            return False
        payload = queue.popleft()
        self.handle(dst, Received(src, payload))
        return True

    def settle(self, limit: int = 100_000) -> None:
        """Deliver everything in flight and fire due timers until quiet."""
        for _ in range(limit):
            moved = False
            for key in sorted(self.flight, key=lambda k: (bytes(k[0]), bytes(k[1]))):
                while self.transfer(*key):
                    moved = True
            if moved:
                continue
            due = [(min(w), p) for p, w in self.wakes.items() if w]
            if not due:
                return
            at, peer = min(due)
            self.now = max(self.now, at)
            self.wakes[peer] = [w for w in self.wakes[peer] if w > self.now]
            self.handle(peer, Tick())
        raise AssertionError("the cluster did not settle")

    def restart(self, peer: PeerId) -> None:
        """Crash ``peer`` and start it again from exactly what it persisted."""
        for other in self.ids:
            if other != peer:
                self.disconnect(peer, other)
        disk = self.disks[peer]
        key = self.keys[self.ids.index(peer)]
        member = Member(key, GroupCore(self.group), self.rng.randbytes, joined_at=self.now)
        own_copies: dict[EventId, dict[PeerId, bytes]] = {}
        copies: dict[EventId, bytes] = {}
        for (event_id, recipient), blob in disk.copies.items():
            if recipient == peer:
                copies[event_id] = blob
            else:
                own_copies.setdefault(event_id, {})[recipient] = blob
        rows = [(e, disk.received[e.id], disk.texts.get(e.id), disk.contents.get(e.id))
                for e in disk.events]
        effects = member.restore_from(rows, disk.own, disk.own_history, disk.peer_keys,
                                      disk.acked, copies, own_copies, disk.read_marks)
        self.members[peer] = member
        self.wakes[peer] = []
        self.run(peer, effects)

    # -- views --

    def texts(self, peer: PeerId) -> dict[EventId, str | None]:
        return dict(self.members[peer].texts)

    def order(self, peer: PeerId) -> list[EventId]:
        return [e.id for e in self.members[peer].core.ordered()]
