"""The member protocol's stateful test with a relay among the peers, which may drop,
delay, reorder, duplicate and tamper with what it forwards (a test double around the
relay core): members must still converge (same events, order, membership, readable
content) and never accept a forgery; the relay must never read anything.

It runs every rule of ``test_member_machine`` (commands, partitions, loss, crashes) with
members in client-side or relay fanout, plus the relay's own misbehaviour.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from node.group import commands as C
from node.group.bodies import Role
from node.group.events import Event
from node.group.member_io import Events
from tests.group.relay_cluster import RelayCluster
from tests.group.test_member_machine import MemberProtocol


class RelayProtocol(MemberProtocol):
    c: RelayCluster

    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**16),
                mode=st.sampled_from(["private", "pairwise"]),
                fanout=st.sampled_from(["client", "relay"]))
    def found_with_relay(self, n: int, seed: int, mode: str, fanout: str) -> None:
        self.c = RelayCluster(n + 1, mode, seed=seed, fanout=fanout, admins=2)
        self.c.connect_all()
        self.c.settle()
        self.counter = 0
        self.forged: set[bytes] = set()

    # the parent's initializer is replaced by the one above
    found = None  # type: ignore[assignment]

    @rule(i=st.integers(0, 5), j=st.integers(0, 5), role=st.sampled_from(
        [Role.GUEST, Role.MEMBER, Role.ADMIN]))
    def add(self, i: int, j: int, role: Role) -> None:
        """As the parent's, but never of the relay's peer (it runs a relay core: made a
        member after being undesignated, it would be handed keys it never opens)."""
        peer = self._member(j)
        if peer != self.c.relay_id:
            self._try(self._member(i), C.AddMember(peer, role))

    # -- the relay misbehaves --

    def _from_relay(self, j: int) -> tuple[str, object] | None:
        member = self.c.member_ids[j % len(self.c.member_ids)]
        queue = self.c.flight.get((self.c.relay_id, member))
        return (member, queue) if queue else None

    @rule(j=st.integers(0, 5), field=st.sampled_from(["signature", "lamport", "copy"]))
    def relay_tampers(self, j: int, field: str) -> None:
        """The relay changes the first event (or copy) of a message it forwards."""
        found = self._from_relay(j)
        if found is None:
            return
        _, queue = found
        payload = queue[0]  # type: ignore[index]
        if not isinstance(payload, Events) or not payload.events:
            return
        event = payload.events[0]
        if field == "copy":
            if not payload.copies:
                return
            (eid, blob), *rest = payload.copies
            bad = bytes([blob[0] ^ 1]) + blob[1:]
            queue[0] = dataclasses.replace(payload, copies=((eid, bad), *rest))  # type: ignore[index]
            return
        if field == "signature":
            forged = Event(event.unsigned, bytes([event.signature[0] ^ 1]) + event.signature[1:])
        else:
            forged = Event(dataclasses.replace(event.unsigned, lamport=event.lamport + 1),
                           event.signature)
        self.forged.add(forged.id)
        queue[0] = dataclasses.replace(payload, events=(forged, *payload.events[1:]))  # type: ignore[index]

    @rule(j=st.integers(0, 5))
    def relay_withholds(self, j: int) -> None:
        """The relay silently drops what it was to forward (the channel stays up)."""
        found = self._from_relay(j)
        if found is not None:
            found[1].clear()  # type: ignore[attr-defined]

    @rule(i=st.integers(0, 5))
    def designate_again(self, i: int) -> None:
        """An admin undesignates or designates the relay again (refusals are fine)."""
        from node.group.bodies import Relay as RelayBody
        peer = self.c.member_ids[i % len(self.c.member_ids)]
        on = self.c.relay_id not in self.c.members[peer].core.state.relays
        self._try(peer, C.AuthorBody(RelayBody(self.c.relay_id, on)))

    # -- invariants --

    @invariant()
    def no_forgery_accepted_and_relay_reads_nothing(self) -> None:
        if not hasattr(self, "c"):
            return
        for peer in self.c.ids:
            core = self.c.members[peer].core
            assert not any(core.get(f) is not None for f in self.forged)  # type: ignore[arg-type]
            assert self.c.relay_id not in core.frontier  # nobody holds an event by it
        relay = self.c.relay
        assert not relay.contents and not relay.keys.peers and relay.keys.own is None
        assert all(t is None for t in relay.texts.values())
        assert self.c.relay_id not in relay.core.state.members


RelayProtocol.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRelayProtocol = RelayProtocol.TestCase
