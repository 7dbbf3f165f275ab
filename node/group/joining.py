"""Joining an open group: the member's answer and the joiner's side (pure).

Theory of operation
-------------------
A peer that is not a member of an open group has none of its events, and
anti-entropy runs only between members, so joining starts with a bootstrap
(docs/protocol.md section 17, "Joining"):

**The member's side** (``answer_open``). Asked for a group's events (an
``open`` peer message), a member answers only for an *open* group it is a
member of, and only a peer that may read it: not banned, and under a
whitelist approved or already a member. Otherwise the answer is
``RefuseOpen`` with the reason, which the driver sends as ``open-refused``;
a private, pairwise or unknown group gets the same reason, so a private
group's existence is never confirmed. Accepting, the answer is the member
input ``HistoryWanted``: the member core notes that it owes the asker the
history (as for an ADD: when the asker's JOIN arrives it pushes whatever the
asker lacks), pushes every event it has, then its version vector.

**The joiner's side** (``Joining``, one per attempt, with one chosen
member). Its phases form a table (``_TABLE``)::

    ASKING --events/vector--> ASKING    (a side core takes the events in)
    ASKING --vector covered--> ADOPTED  (Adopt: the events, and the JOIN to author)
    ASKING --JOIN invalid----> FAILED   (JoinFailed: why)
    ASKING --refusal---------> FAILED
    ASKING --timed out-------> FAILED   (no answer, or an incomplete history)

``start`` returns the request to send. Events go into a side core
(``GroupCore``: every signature and rule checked as for a real group;
nothing is stored), bounded by ``MAX_JOIN_BYTES``; events it rejects are
dropped with a ``Warn``. Once the vector has arrived and the side core's
frontier covers it, the joiner checks that its JOIN would be valid in that
state; if so the result is ``Adopt`` (the driver stores the group, delivers
the events and authors the JOIN through the member core), else ``JoinFailed``
with the reason, and nothing is kept. A member that never completes what its
vector names (an incomplete history) is found out only by the driver's
timeout (``TimedOut``), whose failure says how much arrived; the driver then
asks the next member. A node that was a member before (it left, or was
banned and then unbanned) passes its stored events as ``known``: the side
core starts from them, so the check sees what the member sent on top of what
it had (an UNBAN, say), and ``Adopt`` carries only what it lacked.

Peer input in a final phase is ignored (a late batch is not an error); a
local misuse (``TimedOut`` after the end) raises ``LocalProtocolError`` and
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from node.errors import LocalProtocolError
from node.group.bodies import Join
from node.group.events import Event, GroupId, Kind
from node.group.log_effects import Dropped, Rejected
from node.group.member import Member
from node.group.member_io import HistoryWanted, Warn
from node.group.membership import AuthorizationError, authorize
from node.group.state import GroupCore
from node.ids import PeerId, short_id

#: Most bytes of events one joining attempt takes in before giving up on that member
#: (a side core lives in memory until the group is adopted).
MAX_JOIN_BYTES = 64 * 1024 * 1024

#: The one reason given for a group that is unknown here, not open, or that we are
#: not a member of (so a private group's existence is never confirmed).
NO_OPEN_GROUP = "no open group with this id here"
BANNED = "you are banned from this group"
NOT_APPROVED = "this group admits only peers an admin approved"


# -- the member's answer --


@dataclass(frozen=True, slots=True)
class RefuseOpen:
    """Send ``open-refused`` with ``reason`` to ``peer`` for ``group``."""

    peer: PeerId
    group: GroupId
    reason: str


def answer_open(group: GroupId, member: Member | None, asker: PeerId
                ) -> RefuseOpen | HistoryWanted:
    """How the member ``member`` (None: no such group here) answers ``asker``'s ``open``:
    a refusal, or the input to hand the member core (it pushes the history and vector)."""
    if member is None or member.core.mode != "open" or member.me not in (
            member.core.state.members):
        return RefuseOpen(asker, group, NO_OPEN_GROUP)
    state = member.core.state
    if asker in state.banned:
        return RefuseOpen(asker, group, BANNED)
    if state.policy == "whitelist" and asker not in state.approved \
            and asker not in state.members:
        return RefuseOpen(asker, group, NOT_APPROVED)
    return HistoryWanted(asker)


# -- the joiner's side: inputs --


@dataclass(frozen=True, slots=True)
class HistoryArrived:
    """An ``events`` message of the group from ``sender`` (decoded; undecodable ones
    were dropped by the driver)."""

    sender: PeerId
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class VectorArrived:
    """The member's version vector: the history is complete once we cover it."""

    sender: PeerId
    vector: tuple[tuple[PeerId, int], ...]


@dataclass(frozen=True, slots=True)
class RefusalArrived:
    sender: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The driver gave up waiting for this member."""


JoinInput = HistoryArrived | VectorArrived | RefusalArrived | TimedOut

# -- effects --


@dataclass(frozen=True, slots=True)
class AskOpen:
    """Send ``open`` for ``group`` to ``peer``."""

    peer: PeerId
    group: GroupId


@dataclass(frozen=True, slots=True)
class Adopt:
    """The history is complete and our JOIN valid: store the group (``core`` holds its
    state), deliver ``events`` (oldest first) as sent by ``peer``, then author ``join``."""

    core: GroupCore
    peer: PeerId
    events: tuple[Event, ...]
    join: Join


@dataclass(frozen=True, slots=True)
class JoinFailed:
    """Nothing is kept; ``reason`` is one line for the user."""

    reason: str


JoinEffect = AskOpen | Adopt | JoinFailed | Warn


class Phase(Enum):
    ASKING = "asking"
    ADOPTED = "adopted"
    FAILED = "failed"


#: What each phase does with each input: "take" (handle it), "ignore" (peer input after
#: the end), or absent (a local misuse: raises).
_TABLE: dict[Phase, dict[type, str]] = {
    Phase.ASKING: {HistoryArrived: "take", VectorArrived: "take", RefusalArrived: "take",
                   TimedOut: "take"},
    Phase.ADOPTED: {HistoryArrived: "ignore", VectorArrived: "ignore",
                    RefusalArrived: "ignore"},
    Phase.FAILED: {HistoryArrived: "ignore", VectorArrived: "ignore",
                   RefusalArrived: "ignore"},
}


class Joining:
    """One attempt to join ``group`` through member ``peer`` (see the module docstring)."""

    def __init__(self, me: PeerId, group: GroupId, peer: PeerId, name: str,
                 known: Sequence[Event] = ()) -> None:
        self.me, self.group, self.peer, self.name = me, group, peer, name
        self.phase = Phase.ASKING
        self.core = GroupCore(group)
        for event in known:  # what we stored as a member before (already checked once)
            self.core.receive(event)
        self.known = frozenset(e.id for e in self.core.ordered())
        self.target: dict[PeerId, int] | None = None
        self.taken = 0  # bytes of events taken in from the member

    def start(self) -> list[JoinEffect]:
        return [AskOpen(self.peer, self.group)]

    def handle(self, input: JoinInput) -> list[JoinEffect]:
        action = _TABLE[self.phase].get(type(input))
        if action is None:
            raise LocalProtocolError(f"{type(input).__name__} while {self.phase.value}")
        if action == "ignore" or (not isinstance(input, TimedOut)
                                  and input.sender != self.peer):
            return []  # (only the member we asked speaks for this attempt)
        if isinstance(input, RefusalArrived):
            return self._fail(f"{short_id(self.peer)} refused: {input.reason}")
        if isinstance(input, TimedOut):
            return self._fail(self._no_answer())
        out: list[JoinEffect] = []
        if isinstance(input, HistoryArrived):
            self.taken += sum(len(e.raw) for e in input.events)
            if self.taken > MAX_JOIN_BYTES:
                return self._fail(f"{short_id(self.peer)} sent more than "
                                  f"{MAX_JOIN_BYTES} bytes of events")
            for event in input.events:
                for result in self.core.receive(event):
                    if isinstance(result, Rejected | Dropped):
                        out.append(Warn(logging.WARNING, f"joining {self.group.hex()[:12]}: "
                                        f"dropping an event from {short_id(self.peer)}: "
                                        f"{result.reason}"))
        else:
            self.target = dict(input.vector)
        return out + self._check()

    def _check(self) -> list[JoinEffect]:
        """Adopt or fail once the frontier covers the member's vector."""
        if self.target is None or any(self.core.frontier.get(a, 0) < n
                                      for a, n in self.target.items()):
            return []
        state = self.core.state
        body = Join(self.name)
        try:
            if not state.created:
                raise AuthorizationError("the member sent no CREATE")
            authorize(state, self.me, Kind.JOIN, body)
        except AuthorizationError as exc:
            return self._fail(f"cannot join {state.name or 'this group'!r}: {exc}")
        self.phase = Phase.ADOPTED
        events = tuple(e for e in self.core.ordered() if e.id not in self.known)
        return [Adopt(self.core, self.peer, events, body)]

    def _no_answer(self) -> str:
        who = short_id(self.peer)
        if self.target is None and self.taken == 0:
            return f"no answer from {who}"
        have = sum(self.core.frontier.values())
        if self.target is None:
            return f"{who} sent {have} event(s) but never said how many it has"
        want = sum(self.target.values())
        return f"{who} sent an incomplete history ({have} of {want} events)"

    def _fail(self, reason: str) -> list[JoinEffect]:
        self.phase = Phase.FAILED
        return [JoinFailed(reason)]
