"""A ``Cluster`` with one relay (``node.group.relaying.Relay``) among its peers."""

from __future__ import annotations

import dataclasses

from node.group import commands as C
from node.group.bodies import Relay as RelayBody
from node.group.bodies import Role
from node.group.events import Event, EventId, Kind
from node.group.member_io import Effect, Events, Send, SendMany
from node.group.member_state import Settings
from node.group.relaying import Relay
from node.group.state import GroupCore
from node.ids import PeerId
from tests.group.cluster import Cluster


class RelayCluster(Cluster):
    """``n`` peers: the last one is the relay (designated by the owner), the others
    members (the owner adds them, as admins if ``admins``).

    ``misbehave`` makes the relay a test double: whatever events it sends are dropped
    ("drop"), sent in reverse order ("reorder"), or the first one forged ("signature":
    its signature changed; "lamport": its Lamport number changed, the signature kept)
    or its copies corrupted ("copy"); "honest" leaves them alone. ``forged`` holds the
    ids of the forgeries it sent."""

    def __init__(self, n: int, mode: str = "private", seed: int = 0, *,
                 fanout: str = "client", admins: int = 0, budget: int | None = None) -> None:
        super().__init__(n, mode, seed=seed)
        self.relay_id = self.ids[-1]
        self.member_ids = self.ids[:-1]
        kwargs = {} if budget is None else {"budget": budget}
        self.members[self.relay_id] = Relay(self.keys[-1], GroupCore(self.group),
                                            self.rng.randbytes, joined_at=self.now, **kwargs)
        owner = self.ids[0]
        for k, peer in enumerate(self.member_ids[1:]):
            self.do(owner, C.AddMember(peer, Role.ADMIN if k < admins else Role.MEMBER))
        for peer in self.member_ids:
            self.members[peer].settings = Settings(fanout=fanout)
        self.misbehave = "honest"
        self.forged: set[EventId] = set()
        self.do(owner, C.AuthorBody(RelayBody(self.relay_id, True)))

    def run(self, peer: PeerId, effects: list[Effect]) -> Event | None:
        if peer == getattr(self, "relay_id", None) and self.misbehave != "honest":
            effects = [t for t in (self._tamper(e) for e in effects) if t is not None]
        return super().run(peer, effects)

    def _tamper(self, effect: Effect) -> Effect | None:
        if not isinstance(effect, Send | SendMany) or not isinstance(effect.payload, Events) \
                or not effect.payload.events:
            return effect
        payload = effect.payload
        events = payload.events
        if self.misbehave == "drop":
            return None
        if self.misbehave == "reorder":
            payload = dataclasses.replace(payload, events=tuple(reversed(events)))
        elif self.misbehave == "copy":
            payload = dataclasses.replace(payload, copies=tuple(
                (i, bytes([b[0] ^ 1]) + b[1:]) for i, b in payload.copies))
        else:
            first = events[0]
            if self.misbehave == "signature":
                forged = Event(first.unsigned, bytes([first.signature[0] ^ 1])
                               + first.signature[1:])
            else:
                forged = Event(dataclasses.replace(first.unsigned, lamport=first.lamport + 1),
                               first.signature)
            self.forged.add(forged.id)
            payload = dataclasses.replace(payload, events=(forged, *events[1:]))
        return dataclasses.replace(effect, payload=payload)

    @property
    def relay(self) -> Relay:
        relay = self.members[self.relay_id]
        assert isinstance(relay, Relay)
        return relay

    def restart(self, peer: PeerId) -> None:
        if peer == self.relay_id:
            self.restart_relay()
        else:
            super().restart(peer)

    def restart_relay(self) -> None:
        """Crash the relay and start it again from what it persisted."""
        for other in self.ids:
            if other != self.relay_id:
                self.disconnect(self.relay_id, other)
        disk = self.disks[self.relay_id]
        relay = Relay(self.keys[-1], GroupCore(self.group), self.rng.randbytes,
                      joined_at=self.now, budget=self.relay.budget)
        rows = [(e, disk.received[e.id], None, None) for e in disk.events]
        effects = relay.restore_from(rows, None, [], {}, {}, {}, {}, {})
        held: dict[EventId, dict[PeerId, bytes]] = {}
        for (event_id, recipient), blob in disk.copies.items():
            held.setdefault(event_id, {})[recipient] = blob
        relay.restore_held(held)
        self.members[self.relay_id] = relay
        self.wakes[self.relay_id] = []
        self.run(self.relay_id, effects)


def events_sent(effects: list[object], to: PeerId) -> list[Event]:
    """The events ``effects`` send to ``to``."""
    out: list[Event] = []
    for effect in effects:
        peers: tuple[PeerId, ...] = (effect.peer,) if isinstance(effect, Send) else \
            effect.peers if isinstance(effect, SendMany) else ()
        if to in peers and isinstance(effect, Send | SendMany) \
                and isinstance(effect.payload, Events):
            out.extend(effect.payload.events)
    return out


def messages(c: Cluster, peer: PeerId) -> list[str | None]:
    """The texts of the messages ``peer`` holds, in the total order."""
    m = c.members[peer]
    return [m.texts.get(e.id) for e in m.core.ordered() if e.kind is Kind.MESSAGE]
