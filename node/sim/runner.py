"""One simulated run: found the group, send, churn, cut and heal, then measure.

Theory of operation
-------------------
1. **Set-up** (neither simulated time nor counted): N + 1 identity keys from
   the seed; the founder creates the group and adds everyone through its real
   core; in sender-keys mode every author makes its first sender key (a real
   SENDER_KEY event sealed to every member) and the authors exchange them.
   Every other member then starts from a copy of the founder's core
   (``GroupCore.copy``) and opens its sealed chain keys: the state it would reach
   by receiving those events, without N members each folding N events.
2. **Traffic**, from time 0: ``offline`` members (non-authors) are offline,
   and with ``partition`` the members are split into two random halves. The
   M messages go out round-robin over the authors, ``duration / M`` apart
   (a burst when 0). ``churn`` joins and leaves per second happen at Poisson
   times during ``duration``: the founder adds a new member (a fresh key) or
   removes a random non-author.
3. **Heal**: when the network is quiet, the partition heals and the offline
   members come back; members reconnect and sync until quiet again.

Measured per run (see ``node.bench.sim`` for the names): who got each
message when (a message's *audience* is the members its author sent it to),
bytes per kind of traffic, the author's counters, receivers' verifications,
rekeying, and the CPU time the author's ``send`` took (``cpu_clock``: the
only measurement that is not a function of the seed).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node.crypto.keys import IdentityKey
from node.group import keys as K
from node.group.bodies import Add, Remove, Role, SenderKey, decode_body
from node.group.events import Event, EventId, Kind
from node.group.member_io import Events
from node.group.state import GroupCore
from node.ids import PeerId
from node.sim.clock import Scheduler
from node.sim.member import Member
from node.sim.network import LinkSpec, Network
from node.sim.relay import attach, designation, relay_key, use_relay
from node.sim.relay import audience as audience_of_relay
from node.sim.scenario import CORE_MODE, MAX_MEMBERS, Scenario, message_text
from node.sim.wire import FRAME_HEADER, Frame, Payload
from node.testing.groups import Replica
from node.wire.messages import GROUP_ELEMENT_LEN


@dataclass(slots=True)
class Sent:
    """One message as its author sent it."""

    index: int
    author: PeerId
    at: float
    event: Event | None  # None in raw mode
    audience: list[PeerId]
    counters: K.Counters = field(default_factory=K.Counters)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 1]; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Simulation:
    def __init__(self, scenario: Scenario,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.s = scenario
        self.cpu_clock = cpu_clock
        seed = scenario.seed
        self.key_rng = random.Random(f"kith-sim/{seed}/keys")
        self.world_rng = random.Random(f"kith-sim/{seed}/world")
        self.crypto_rng = random.Random(f"kith-sim/{seed}/nonces")
        self.scheduler = Scheduler()
        self.net = Network(self.scheduler, random.Random(f"kith-sim/{seed}/loss"),
                           link=LinkSpec(scenario.latency, scenario.loss),
                           bandwidth=scenario.bandwidth, cpu=scenario.cpu)
        self.net.deliver = self._deliver
        self.net.on_link_up = self._link_up
        self.members: dict[PeerId, Member] = {}
        self.order: list[PeerId] = []  # everyone who ever took part, in the order they came
        self.authors: list[PeerId] = []
        self.offline: list[PeerId] = []
        self.sent: list[Sent] = []
        self.arrivals: dict[tuple[PeerId, int], float] = {}  # raw mode
        self.removed: dict[PeerId, float] = {}  # member -> when its removal was authored
        self.joined: dict[PeerId, float] = {}
        self.cpu = 0.0
        #: Server-side fanout (``node.sim.relay``): the relay node, and its CPU time.
        self.relay: Member | None = None
        self.relay_cpu = 0.0
        self.traffic_end = 0.0
        self.heal_at: float | None = None
        #: At the heal: bytes of the events (and pairwise copies) the current members
        #: lacked of what any member held, and how many members lacked anything.
        self.lacked_bytes = 0
        self.laggards = 0
        self.setup_events: list[Event] = []

    # -- set-up --

    def setup(self) -> None:
        """Found the group (done by ``run`` if not done yet)."""
        if self.members or self.order:
            return
        s = self.s
        keys = [IdentityKey(self.key_rng.randbytes(32)) for _ in range(s.members + 1)]
        ids = [k.peer_id for k in keys]
        self.authors = ids[:s.authors]
        self.net.watched.update(self.authors)
        offline_pool = ids[s.authors:]
        count = math.floor(s.offline * len(offline_pool))
        self.offline = sorted(self.world_rng.sample(offline_pool, count))
        for pid in ids:
            self.net.add(pid, online=pid not in self.offline)
        self.order = list(ids)
        relay = relay_key(s.seed) if s.relayed else None
        if relay is not None:
            self.net.add(relay.peer_id)
        if s.mode == "raw":
            return
        founder, _ = Replica.founding(keys[0], "sim", CORE_MODE[s.mode],
                                           max_members=2 * MAX_MEMBERS,
                                           nonce=self.key_rng.randbytes(16))
        for pid in ids[1:]:
            founder.author(Add(pid, Role.MEMBER, ""))
        if relay is not None:
            founder.author(designation(relay.peer_id))
        reference = founder.core
        for i, key in enumerate(keys[:s.authors]):
            self._member(key, founder.core if i == 0 else reference.copy())
            if relay is not None:
                use_relay(self.members[key.peer_id])
        if CORE_MODE[s.mode] == "private":
            for pid in self.authors:
                event = self.members[pid].rotate()
                self.setup_events.append(event)
                sealed = self.members[pid].m.own_copies.get(event.id, {})
                for other in self.authors:
                    if other != pid:  # with its own sealed copy, as fanout sends it
                        copy = ((event.id, sealed[other]),) if other in sealed else ()
                        self.members[other].on_message(pid, Events((event,), copy))
            for pid in self.authors:
                self.members[pid].outbox.clear()
        bodies = [(event.author, decode_body(Kind.SENDER_KEY, event.body),
                   self.members[event.author].m.own_copies.get(event.id, {}))
                  for event in self.setup_events]
        for key in keys[s.authors:]:
            member = self._member(key, reference.copy())
            for author, body, sealed in bodies:
                assert isinstance(body, SenderKey)
                state = K.open_distribution(member.identity, body, sealed.get(key.peer_id))
                if state is not None:
                    member.keys.peers[(author, body.epoch)] = state
        frontier = dict(reference.frontier)
        if relay is not None:
            self.relay = attach(self, relay, reference.copy())
            self.relay.set_up(frozenset(ids), frontier)
        for member in self.members.values():
            member.set_up(frozenset(ids), frontier)

    def _member(self, key: IdentityKey, core: GroupCore) -> Member:
        pid = key.peer_id
        member = Member(key, core, self.scheduler, self.crypto_rng,
                        connected=lambda peer: self.net.connected(pid, peer),
                        peers=lambda: self.net.peers(pid))
        member.flush_outbox = lambda: self._flush(member)
        self.members[pid] = member
        return member

    # -- running --

    def run(self) -> None:
        """Set up, run the traffic phase, then heal and let everyone catch up."""
        s = self.s
        self.setup()
        if s.partition:
            shuffled = list(self.order)
            self.world_rng.shuffle(shuffled)
            half = len(shuffled) // 2
            self.net.split({pid: int(i >= half) for i, pid in enumerate(shuffled)})
        for i in range(s.messages):
            self.scheduler.at(i * s.interval, self._send, i)
        if s.churn > 0 and s.mode != "raw":
            t = self.world_rng.expovariate(s.churn)
            while t <= s.duration:
                self.scheduler.at(t, self._churn)
                t += self.world_rng.expovariate(s.churn)
        self.scheduler.run()
        self.traffic_end = self.scheduler.now
        if s.partition or self.offline:
            self.heal_at = self.scheduler.now
            if s.mode != "raw":
                self.lacked_bytes, self.laggards = self._lacking()
            if s.partition:
                self.net.heal()
            for pid in self.offline:
                self.net.go_online(pid)
            self.scheduler.run()

    def _send(self, index: int) -> None:
        author = self.authors[index % len(self.authors)]
        if self.s.mode == "raw":
            audience = self.net.peers(author)
            for dst in audience:
                self.net.send(author, dst, Frame(index), FRAME_HEADER + self.s.size, "message")
            self.sent.append(Sent(index, author, self.scheduler.now, None, audience))
            return
        member = self.members[author]
        text = message_text(index, self.s.size)
        start = self.cpu_clock()
        event, counters = member.send(text)
        self.cpu += self.cpu_clock() - start
        audience = [dst for dst, payload, _, kind in member.outbox
                    if kind == "message" and isinstance(payload, Events)
                    and payload.events[0].id == event.id]
        if self.relay is not None and audience == [self.relay.me]:  # the relay pushes it on
            audience = audience_of_relay(self, author, self.relay.me)
        self.sent.append(Sent(index, author, self.scheduler.now, event, audience, counters))
        self._flush(member)

    def _churn(self) -> None:
        owner = self.members[self.authors[0]]
        current = [pid for pid in owner.core.state.members if pid not in self.authors]
        if current and self.world_rng.random() < 0.5:
            victim = self.world_rng.choice(sorted(current))
            self.removed[victim] = self.scheduler.now
            owner.author(Remove(victim))
        else:
            key = IdentityKey(self.key_rng.randbytes(32))
            pid = key.peer_id
            self._member(key, GroupCore(owner.group))
            self.order.append(pid)
            self.joined[pid] = self.scheduler.now
            self.net.add(pid, online=False)
            self.net.go_online(pid)  # on the LAN before it is added, as a real node would be
            owner.add(pid)
        self._flush(owner)

    def _flush(self, member: Member) -> None:
        outbox, member.outbox = member.outbox, []
        for dst, payload, size, kind in outbox:
            self.net.send(member.me, dst, payload, size, kind)

    def _deliver(self, dst: PeerId, src: PeerId, payload: Payload) -> None:
        if isinstance(payload, Frame):
            self.arrivals[(dst, payload.index)] = self.scheduler.now
            return
        member = self._node(dst)
        member.on_message(src, payload)
        self._flush(member)

    def _link_up(self, a: PeerId, b: PeerId) -> None:
        if self.s.mode == "raw":
            return
        for x, y in ((a, b), (b, a)):
            self._node(x).link_up(y)
        self._flush(self._node(a))
        self._flush(self._node(b))

    def _node(self, pid: PeerId) -> Member:
        """The member, or the relay (relay modes), called ``pid``."""
        if self.relay is not None and pid == self.relay.me:
            return self.relay
        return self.members[pid]

    def _lacking(self) -> tuple[int, int]:
        """What the current members lack of what anyone holds: (bytes, members).

        An event counts its bytes on the wire (its signed encoding less the group, which an
        ``events`` message carries once), plus the member's own copy (pairwise) when
        its author holds one for it: what a sync stream has to carry at the least.
        """
        union: dict[EventId, int] = {}
        copies: dict[tuple[EventId, PeerId], int] = {}
        for member in self.members.values():
            for event in member.core.ordered():
                union.setdefault(event.id, len(event.raw) - GROUP_ELEMENT_LEN)
            for event_id, per in member.m.own_copies.items():
                for peer, blob in per.items():
                    copies[(event_id, peer)] = len(blob)
        total = laggards = 0
        for pid in self.current_members():
            core = self.members[pid].core
            lacked = sum(size + copies.get((event_id, pid), 0)
                         for event_id, size in union.items() if core.get(event_id) is None)
            total += lacked
            laggards += lacked > 0
        return total, laggards

    # -- what happened --

    @property
    def relay_id(self) -> PeerId | None:
        return None if self.relay is None else self.relay.me

    def received_at(self, member: PeerId, sent: Sent) -> float | None:
        if sent.event is None:
            return self.arrivals.get((member, sent.index))
        return self.members[member].read_at.get(sent.event.id)

    def current_members(self) -> list[PeerId]:
        """Members at the end (by the founder's view), in the order they came."""
        if self.s.mode == "raw":
            return list(self.order)
        final = self.members[self.authors[0]].core.state.members
        return [pid for pid in self.order if pid in final]

    def orders(self) -> dict[PeerId, list[EventId]]:
        """Every current member's total order of event ids."""
        return {pid: [e.id for e in self.members[pid].core.ordered()]
                for pid in self.current_members()}

    def converged(self) -> bool:
        if self.s.mode == "raw":
            return False
        orders = list(self.orders().values())
        return all(o == orders[0] for o in orders)
