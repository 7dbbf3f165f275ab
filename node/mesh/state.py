"""Who is out there and whom to dial: the mesh's pure state.

Theory of operation
-------------------
``MeshState`` knows three things and nothing about sockets or clocks (time
comes in as ``now``):

* **candidates**: Kith nodes heard over mDNS, by instance name. mDNS does not
  say who a node is, so a candidate's peer id is learnt only when a channel to
  it comes up (we dialled it, or it dialled us and its handshake named the
  instance it announces).
* **known peers**: every peer id we have had a channel with, with how it was
  found (mdns, manual, inbound) and when it was last seen.
* **manual targets**: ``--peer`` addresses, dialled whatever mDNS says.

Dial decisions. Two nodes that hear each other would both dial; one channel
then loses the duplicate rule (docs/protocol.md section 7). To avoid the wasted
handshake, the node whose instance name sorts first dials at once and the
other waits ``grace`` seconds, dialling only if no channel came up by then
(covering one-way reachability). A candidate is not dialled while its peer is
online, is ignored if it is this node, and is forgotten after
``forget_after`` consecutive failed dials (it comes back with its next
announcement). At most ``max_candidates`` are tracked; more are refused.

Presence of a peer: **online** while a channel is up; **reachable** when
not online but announced by a candidate that has answered (a fresh
announcement, not followed by a failure or a dropped channel); otherwise
**offline**, with the time it was last seen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from node.ids import PeerId
from node.wire.announce import Announcement

MAX_INSTANCES = 1024


class Presence(enum.Enum):
    ONLINE = "online"
    REACHABLE = "reachable"
    OFFLINE = "offline"


@dataclass(slots=True)
class Candidate:
    announcement: Announcement
    heard: float
    peer: PeerId | None = None
    verified: bool = True  # answered since it was (re)announced
    failures: int = 0
    is_self: bool = False


@dataclass(slots=True)
class KnownPeer:
    peer_id: PeerId
    name: str
    address: str
    found: set[str] = field(default_factory=set)
    online_since: float | None = None
    last_seen: float | None = None


@dataclass(frozen=True, slots=True)
class PeerView:
    """One row of ``kith peers``."""

    peer_id: PeerId | None
    name: str
    address: str
    state: Presence
    found: tuple[str, ...]
    since: float | None  # online since
    last_seen: float | None


class MeshState:
    def __init__(
        self,
        own_instance: str | None,
        *,
        max_candidates: int = 64,
        forget_after: int = 10,
        grace: float = 2.0,
    ) -> None:
        self.own_instance = own_instance
        self.max_candidates = max_candidates
        self.forget_after = forget_after
        self.grace = grace
        self.candidates: dict[str, Candidate] = {}
        self.known: dict[PeerId, KnownPeer] = {}
        self.manual: dict[str, PeerId | None] = {}  # address -> expected id
        #: mDNS instance -> peer id, learnt from handshakes (possibly before the announcement).
        self.instances: dict[str, PeerId] = {}
        self._online: set[PeerId] = set()

    # -- mDNS --

    def announced(self, ann: Announcement, now: float) -> bool:
        """Record an announcement; True if it is new and a dial task should start."""
        if ann.instance == self.own_instance:
            return False
        existing = self.candidates.get(ann.instance)
        if existing is not None:
            existing.announcement = ann
            existing.heard = now
            existing.verified = True
            existing.failures = 0
            return False
        if len(self.candidates) >= self.max_candidates:
            raise OverflowError(f"already tracking {self.max_candidates} announced nodes")
        peer = self.instances.get(ann.instance)
        self.candidates[ann.instance] = Candidate(ann, now, peer=peer)
        if peer is not None and peer in self.known:  # its channel came up before we heard it
            self.known[peer].found.add("mdns")
        return True

    def withdrawn(self, instance: str) -> Candidate | None:
        return self.candidates.pop(instance, None)

    def first_dial_delay(self, instance: str) -> float:
        """Dial at once if our instance name sorts first, else after the grace period."""
        if self.own_instance is None or self.own_instance < instance:
            return 0.0
        return self.grace

    def should_dial(self, instance: str) -> bool:
        cand = self.candidates.get(instance)
        if cand is None or cand.is_self:
            return False
        return cand.peer is None or cand.peer not in self._online

    def dial_failed(self, instance: str) -> bool:
        """Count a failed dial; True if the candidate is now forgotten."""
        cand = self.candidates.get(instance)
        if cand is None:
            return True
        cand.failures += 1
        cand.verified = False
        if cand.failures >= self.forget_after:
            del self.candidates[instance]
            return True
        return False

    def dialled_self(self, instance: str) -> None:
        cand = self.candidates.get(instance)
        if cand is not None:
            cand.is_self = True

    # -- channels --

    def connected(
        self,
        peer: PeerId,
        name: str,
        address: str,
        now: float,
        *,
        found: str,
        instance: str | None = None,
    ) -> None:
        entry = self.known.get(peer)
        if entry is None:
            entry = self.known[peer] = KnownPeer(peer, name, address)
        entry.name, entry.address = name, address
        entry.found.add(found)
        entry.online_since = now
        entry.last_seen = now
        self._online.add(peer)
        if instance:
            self.instances[instance] = peer
            if len(self.instances) > MAX_INSTANCES:  # forget the oldest (they restart often)
                del self.instances[next(iter(self.instances))]
        cand = self.candidates.get(instance) if instance else None
        if cand is not None:
            cand.peer = peer
            cand.verified = True
            cand.failures = 0
            entry.found.add("mdns")

    def disconnected(self, peer: PeerId, now: float) -> None:
        self._online.discard(peer)
        entry = self.known.get(peer)
        if entry is not None:
            entry.online_since = None
            entry.last_seen = now
        for cand in self.candidates.values():
            if cand.peer == peer:
                cand.verified = False  # reachable again only after it answers or re-announces

    def is_online(self, peer: PeerId) -> bool:
        return peer in self._online

    # -- presence --

    def presence(self, peer: PeerId) -> Presence:
        if peer in self._online:
            return Presence.ONLINE
        if any(c.peer == peer and c.verified for c in self.candidates.values()):
            return Presence.REACHABLE
        return Presence.OFFLINE

    def views(self) -> list[PeerView]:
        rows = [
            PeerView(
                p.peer_id,
                p.name,
                self._address_of(p),
                self.presence(p.peer_id),
                tuple(sorted(p.found)),
                p.online_since,
                p.last_seen,
            )
            for p in self.known.values()
        ]
        rows += [
            PeerView(None, c.announcement.instance, _where(c.announcement), Presence.REACHABLE,
                     ("mdns",), None, None)
            for c in self.candidates.values()
            if c.peer is None and c.verified and not c.is_self
        ]
        known_addresses = {p.address for p in self.known.values()}
        rows += [
            PeerView(expected, "", address, Presence.OFFLINE, ("manual",), None, None)
            for address, expected in self.manual.items()
            if address not in known_addresses and (expected is None or expected not in self.known)
        ]
        order = {Presence.ONLINE: 0, Presence.REACHABLE: 1, Presence.OFFLINE: 2}
        return sorted(rows, key=lambda r: (order[r.state], r.name, r.address))

    def _address_of(self, peer: KnownPeer) -> str:
        if peer.peer_id in self._online:
            return peer.address
        for cand in self.candidates.values():
            if cand.peer == peer.peer_id:
                return _where(cand.announcement)
        return peer.address


def _where(ann: Announcement) -> str:
    host = f"[{ann.host}]" if ":" in ann.host else ann.host
    return f"{host}:{ann.port}"
