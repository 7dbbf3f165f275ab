"""What ``GroupCore.receive`` reports, event by event (the replicated log's effects).

Past tense: each says what happened to one incoming event. The member core
(``node.group.receiving``) turns them into persisted rows, acknowledgements,
reactions and warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.group.bodies import Body
from node.group.events import Event, EventId
from node.group.membership import Membership
from node.ids import PeerId

Clock = dict[PeerId, int]


@dataclass(frozen=True, slots=True)
class Delivered:
    event: Event
    body: Body
    clock: Clock  # the author's full vector clock at this event (own entry excluded)


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    before: Membership
    after: Membership


@dataclass(frozen=True, slots=True)
class Rejected:
    event: Event
    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    event: Event


@dataclass(frozen=True, slots=True)
class Equivocation:
    author: PeerId
    seq: int
    first: EventId
    second: Event


@dataclass(frozen=True, slots=True)
class Dropped:
    event: Event
    reason: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """A DELETE was delivered: erase the content of ``target`` (a tombstone stays)."""

    target: EventId
    by: Event


Effect = (
    Delivered | MembershipChanged | Rejected | Duplicate | Equivocation | Dropped | Deleted
)
