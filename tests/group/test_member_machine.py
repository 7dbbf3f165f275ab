"""A stateful property test of the member protocol: 3 to 6 members of a private or a
pairwise group, every command, partitions, loss, duplication, reordering, and
crash-restart from what was persisted.

After every heal and quiescence: every member holds the same events in the same
total order and the same membership; every current member can read every message it
is entitled to (content converges, not only ids); a removed member reads nothing sent
after its removal; and no input ever made ``handle`` fail (an ERROR warning).
"""

from __future__ import annotations

import logging

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from node.group import commands as C
from node.group.bodies import Role
from node.group.events import Event, EventId, Kind
from node.group.member import Member
from node.group.member_io import Announce, Received
from node.group.membership import MembershipEvent
from node.group.state import GroupCore
from node.ids import PeerId
from tests.group.cluster import Cluster

ROLES = [Role.GUEST, Role.MEMBER, Role.ADMIN]


class MemberProtocol(RuleBasedStateMachine):
    c: Cluster

    @initialize(n=st.integers(3, 6), seed=st.integers(0, 2**16),
                mode=st.sampled_from(["private", "pairwise"]))
    def found(self, n: int, seed: int, mode: str) -> None:
        self.c = Cluster(n, mode, seed=seed)
        owner = self.c.ids[0]
        # Two admins besides the owner from the start, so removals conflict often.
        admins = 2
        for k, peer in enumerate(self.c.ids[1:]):
            self.c.do(owner, C.AddMember(peer, Role.ADMIN if k < admins else Role.MEMBER))
        self.c.connect_all()
        self.c.settle()
        self.counter = 0

    # -- helpers --

    def _member(self, i: int) -> PeerId:
        return self.c.ids[i % len(self.c.ids)]

    def _try(self, peer: PeerId, command: C.Command) -> Event | None:
        return self.c.handle(peer, command)  # a refusal is fine; it must not raise

    def _messages(self, peer: PeerId) -> list[Event]:
        m = self.c.members[peer]
        return [e for e in m.core.ordered() if e.kind is Kind.MESSAGE and e.id in m.contents]

    # -- commands --

    @rule(i=st.integers(0, 5))
    def send(self, i: int) -> None:
        self.counter += 1
        self._try(self._member(i), C.SendText(f"m{self.counter}"))

    @rule(i=st.integers(0, 5), j=st.integers(0, 50))
    def reply(self, i: int, j: int) -> None:
        peer = self._member(i)
        messages = self._messages(peer)
        if messages:
            target = messages[j % len(messages)]
            self._try(peer, C.SendText("re", reply_to=target.id))

    @rule(i=st.integers(0, 5), j=st.integers(0, 50))
    def edit(self, i: int, j: int) -> None:
        peer = self._member(i)
        mine = [e for e in self._messages(peer) if e.author == peer]
        if mine:
            self._try(peer, C.EditText(mine[j % len(mine)].id, "edited"))

    @rule(i=st.integers(0, 5), j=st.integers(0, 5), role=st.sampled_from(ROLES))
    def add(self, i: int, j: int, role: Role) -> None:
        self._try(self._member(i), C.AddMember(self._member(j), role))

    @rule(i=st.integers(0, 5), j=st.integers(1, 5))
    def remove(self, i: int, j: int) -> None:
        self._try(self._member(i), C.RemoveMember(self._member(j)))

    @rule(i=st.integers(0, 5), j=st.integers(1, 5))
    def ban(self, i: int, j: int) -> None:
        self._try(self._member(i), C.BanMember(self._member(j)))

    @rule(i=st.integers(0, 5), j=st.integers(1, 5), role=st.sampled_from(ROLES))
    def set_role(self, i: int, j: int, role: Role) -> None:
        self._try(self._member(i), C.SetMemberRole(self._member(j), role))

    @rule(i=st.integers(1, 2), j=st.integers(1, 5), cut=st.integers(0, 2**6 - 1))
    def remove_each_other(self, i: int, j: int, cut: int) -> None:
        """A partition with ``a`` and ``b`` on either side, and each removes the other
        (conflicting removals: one of them stays, restored to whoever saw it removed)."""
        a, b = self._member(i), self._member(j)
        if a == b:
            return
        side = [p for k, p in enumerate(self.c.ids) if (cut >> k & 1 or p == a) and p != b]
        self.c.partition(side, [p for p in self.c.ids if p not in side])
        self._try(a, C.RemoveMember(b))
        self._try(b, C.RemoveMember(a))
        self.c.settle()  # each side learns its removal (and may talk without the other)

    @rule(i=st.integers(1, 5))
    def leave(self, i: int) -> None:
        self._try(self._member(i), C.LeaveGroup())

    # -- the network --

    @rule(cut=st.integers(1, 2**6 - 2))
    def partition(self, cut: int) -> None:
        side = [p for k, p in enumerate(self.c.ids) if cut >> k & 1]
        other = [p for p in self.c.ids if p not in side]
        self.c.partition(side, other)

    @rule(i=st.integers(0, 5), j=st.integers(0, 5))
    def deliver_one(self, i: int, j: int) -> None:
        self.c.transfer(self._member(i), self._member(j))

    @rule(i=st.integers(0, 5), j=st.integers(0, 5))
    def drop_one(self, i: int, j: int) -> None:
        """A lost message: the channel it was on breaks (TCP loses nothing otherwise)."""
        src, dst = self._member(i), self._member(j)
        queue = self.c.flight.get((src, dst))
        if queue:
            queue.popleft()
            self.c.disconnect(src, dst)

    @rule(i=st.integers(0, 5), j=st.integers(0, 5))
    def duplicate_one(self, i: int, j: int) -> None:
        src, dst = self._member(i), self._member(j)
        queue = self.c.flight.get((src, dst))
        if queue:
            self.c.handle(dst, Received(src, queue[0]))

    @rule(i=st.integers(0, 5), j=st.integers(0, 5))
    def reorder(self, i: int, j: int) -> None:
        queue = self.c.flight.get((self._member(i), self._member(j)))
        if queue and len(queue) > 1:
            queue.rotate(-1)

    @rule(i=st.integers(0, 5))
    def crash_and_restart(self, i: int) -> None:
        self.c.restart(self._member(i))

    @rule()
    def heal(self) -> None:
        self.c.connect_all()
        for peer in self.c.ids:  # and the periodic vector exchange
            self.c.handle(peer, Announce())
        self.c.settle()
        self.check_converged()

    # -- invariants --

    @invariant()
    def nothing_failed(self) -> None:
        if not hasattr(self, "c"):
            return
        errors = [w for ws in self.c.warnings.values() for w in ws if w.level >= logging.ERROR]
        assert not errors, errors

    def check_converged(self) -> None:
        c = self.c
        # The best-informed member that believes it is one says who the members are. (A
        # member whose re-admission was withdrawn by a concurrent ban is sent what voids
        # it, node.group.sessions, so it stops believing; it reads nothing new.)
        believers = [p for p in c.ids if p in c.members[p].core.state.members]
        if not believers:
            return  # everyone left
        ref = max((c.members[p] for p in believers), key=lambda m: m.core.size())
        final = dict(ref.core.state.members)
        current = [p for p in c.ids if p in final]
        for p in current:
            assert c.members[p].core.state.members == final
            assert c.order(p) == c.order(current[0])
        for reader in current:
            m = c.members[reader]
            for event in m.core.ordered():
                if self._entitled(reader, event):
                    assert m.texts.get(event.id) is not None or event.id in m.contents, (
                        "member cannot read a message it is entitled to")
        for gone in (p for p in c.ids if p not in final):
            self._reads_nothing_after_removal(ref, gone)

    def _entitled(self, reader: PeerId, event: Event) -> bool:
        core = self.c.members[reader].core
        if (event.kind is not Kind.MESSAGE or event.id in core.deleted
                or core.is_withdrawn(event.author, event.seq)):
            return False
        if event.author == reader:
            return True
        admission = _admission(core, reader)
        return admission is not None and core.saw(event.id, admission)

    def _reads_nothing_after_removal(self, ref: Member, gone: PeerId) -> None:
        """``gone`` reads no message whose author had seen it depart and had not seen it
        admitted again since (a message sent while its author had seen a re-admission,
        voided later by a concurrent departure, was sent to a member as far as the
        author could know: like any message concurrent with a departure)."""
        c = self.c
        core = ref.core
        deps = [d.event.id for d in core.state.departures if d.member == gone]
        if not deps:
            return
        admissions = [m.id for m in core.membership_events() if _admits(m, gone)]
        mine = c.members[gone]
        for event in core.ordered():
            if event.kind is not Kind.MESSAGE or event.author == gone:
                continue
            seen = [d for d in deps if core.saw(event.id, d)]
            readmitted = [a for a in admissions if core.saw(event.id, a)]
            if any(not any(core.saw(a, d) for a in readmitted) for d in seen):
                assert mine.texts.get(event.id) is None, "a removed member read a later message"


def _admits(m: MembershipEvent, peer: PeerId) -> bool:
    by_itself = m.kind in (Kind.CREATE, Kind.JOIN) and m.author == peer
    by_other = m.kind in (Kind.ADD, Kind.APPROVE) and getattr(m.body, "member", None) == peer
    return by_itself or by_other


def _admission(core: GroupCore, peer: PeerId) -> EventId | None:
    """The event that last made ``peer`` a member (its CREATE or JOIN, an ADD or APPROVE)."""
    since = None
    for m in core.membership_events():
        if _admits(m, peer):
            since = m.id
    return since


MemberProtocol.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMemberProtocol = MemberProtocol.TestCase
