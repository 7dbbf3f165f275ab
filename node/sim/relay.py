"""Server-side fanout in the simulator: a relay node on the simulated LAN.

Theory of operation
-------------------
In the relay modes (``Scenario.relayed``: ``relay`` in a private group,
``relay-pairwise`` in a pairwise one) the network holds one more node, the
relay: not a member, designated by the founder's real RELAY event during
set-up, running the real relay core (``node.group.relaying.Relay``) inside the
same simulated-member wrapper as the members (``node.sim.member``: the core's
``Send`` effects become traffic, ``Wake`` timers). Its key comes from a seed
stream of its own, so the members' keys and the group are those of the
client-side modes with the same seed.

Every author runs with ``Settings.fanout = "relay"``: it sends each message
once, flagged, to the relay (in a pairwise group with every member's copy),
and the relay stores it and pushes it to every member it is connected to. The
relay's uplink is ``Scenario.relay_uplink`` and its CPU ``Scenario.relay_cpu``
(by default as every member's: a relay on a faster machine is a choice). A
message's *audience* is then the members other than its author that the
relay reaches when it is sent (client-side: the members the author sent it
to). The network counts the authors' and the relay's bytes apart
(``Network.watched``); the relay's CPU time is what its core's inputs took
(``time.process_time`` around each, like the author's ``send``), so
``relay_cpu_ms_per_message`` is measured, not simulated.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from node.crypto.keys import IdentityKey
from node.group.bodies import Relay as RelayBody
from node.group.member_io import Input
from node.group.relaying import Relay as RelayCore
from node.group.state import GroupCore
from node.ids import PeerId
from node.sim.clock import Scheduler
from node.sim.member import Member
from node.sim.network import Network
from node.sim.scenario import Scenario


class Simulation(Protocol):
    """What this module needs of ``node.sim.runner.Simulation`` (which imports it)."""

    s: Scenario
    net: Network
    scheduler: Scheduler
    crypto_rng: random.Random
    cpu_clock: Callable[[], float]
    relay_cpu: float
    members: dict[PeerId, Member]
    order: list[PeerId]

    def _flush(self, member: Member) -> None: ...


def relay_key(seed: int) -> IdentityKey:
    """The relay's identity: a stream of its own, so members' keys do not change."""
    return IdentityKey(random.Random(f"kith-sim/{seed}/relay").randbytes(32))


def designation(relay: PeerId) -> RelayBody:
    """The body of the RELAY event (the founder's, at set-up) that designates ``relay``."""
    return RelayBody(relay, True)


def attach(sim: Simulation, key: IdentityKey, core: GroupCore) -> Member:
    """The relay node, on ``sim``'s network (already added there), with ``core`` (a copy
    of the founder's after set-up: the RELAY event included)."""
    pid = key.peer_id
    sim.net.watched.add(pid)
    sim.net.set_uplink(pid, sim.s.relay_uplink)
    if sim.s.relay_cpu is not None:
        sim.net.set_cpu(pid, sim.s.relay_cpu)
    relay = Member(key, core, sim.scheduler, sim.crypto_rng,
                   connected=lambda peer: sim.net.connected(pid, peer),
                   peers=lambda: sim.net.peers(pid), core_class=RelayCore)
    relay.flush_outbox = lambda: sim._flush(relay)
    handle = relay._handle  # every input the relay takes, timed (its CPU cost)

    def timed(input: Input) -> None:
        start = sim.cpu_clock()
        handle(input)
        sim.relay_cpu += sim.cpu_clock() - start

    relay._handle = timed  # type: ignore[method-assign]  # (instance instrumentation)
    return relay


def use_relay(member: Member) -> None:
    """``member`` authors through the relay (server-side fanout)."""
    member.m.settings.fanout = "relay"


def audience(sim: Simulation, author: PeerId, relay: PeerId) -> list[PeerId]:
    """Who a message sent through the relay now goes to: the members but its author
    that the relay reaches (in the order they came)."""
    members = sim.members[author].core.state.members
    return [pid for pid in sim.order
            if pid != author and pid in members and sim.net.connected(relay, pid)]
