"""The member protocol's stateful test with a relay among the peers, which may drop,
delay, reorder, duplicate and tamper with what it forwards (a test double around the
relay core): members must still converge (same events, order, membership, readable
content) and never accept a forgery; the relay must never read anything.

It runs every rule of ``test_member_machine`` (commands, partitions, loss, crashes) with
members in client-side or relay fanout, plus the relay's own misbehaviour.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from node.group import commands as C
from node.group.bodies import Role
from tests.group.relay_cluster import RelayCluster
from tests.group.test_member_machine import MemberProtocol

MISBEHAVE = ["honest", "drop", "reorder", "signature", "lamport", "copy"]


class RelayProtocol(MemberProtocol):
    c: RelayCluster

    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**16),
                mode=st.sampled_from(["private", "pairwise"]),
                fanout=st.sampled_from(["client", "relay"]), how=st.sampled_from(MISBEHAVE))
    def found_with_relay(self, n: int, seed: int, mode: str, fanout: str, how: str) -> None:
        self.c = RelayCluster(n + 1, mode, seed=seed, fanout=fanout, admins=2)
        self.c.connect_all()
        self.c.settle()
        self.c.misbehave = how  # (set up honestly: the relay is designated, then it acts)
        self.counter = 0

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

    @rule(how=st.sampled_from(MISBEHAVE))
    def relay_behaves(self, how: str) -> None:
        """From now on, the relay drops, reorders or tampers with what it sends (or not)."""
        self.c.misbehave = how

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
            assert not any(core.get(f) is not None for f in self.c.forged)
            assert self.c.relay_id not in core.frontier  # nobody holds an event by it
        relay = self.c.relay
        assert not relay.contents and not relay.keys.peers and relay.keys.own is None
        assert all(t is None for t in relay.texts.values())
        assert self.c.relay_id not in relay.core.state.members


RelayProtocol.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRelayProtocol = RelayProtocol.TestCase
