"""Events of groups we are not in, held until they make us a member (pure).

Theory of operation
-------------------
Someone who adds us pushes us the group's history, and the ADD may be all we get
before the channel breaks; events of a group we do not run may also be junk. So
a node holds them in a small side core per unknown group (``GroupCore``: every
signature and rule checked as for a real group) and adopts the group the moment
they make it a member. Memory is bounded for everyone: at most ``MAX_GROUPS``
unknown groups (the oldest goes first), at most ``MAX_EVENTS`` events each
(over that, the group's events are dropped), and nothing is persisted until the
group is adopted. It is bounded per sender too, in bytes: what one peer sent
for groups we are not in is at most ``MAX_BYTES_PER_PEER`` (over that, the
group is dropped), at most ``MAX_BYTES`` from everyone (the oldest group
goes first), and when that peer's channel goes (``peer_gone``) the groups
only it fed are dropped: an invitation that did not reach its ADD is pushed
again when the adder is back, so nothing is lost by forgetting it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from node.group.events import Event, EventId, GroupId
from node.group.member_io import Warn
from node.group.state import GroupCore
from node.ids import PeerId, short_id

#: Most unknown groups whose events we hold while waiting to see if we were added,
#: and most events held per such group (an invitation is history enough to adopt).
MAX_GROUPS = 8
MAX_EVENTS = 1024
#: Most bytes of events one peer may make us hold for groups we are not in, and all
#: peers together (identities are free: a host can be many peers; over this, the
#: oldest group goes first).
MAX_BYTES_PER_PEER = 8 * 1024 * 1024
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Adopt:
    """We are a member: start running the group with these events (and our copies)."""

    core: GroupCore
    events: tuple[Event, ...]
    copies: tuple[tuple[EventId, bytes], ...]


class Invitations:
    """The side cores of unknown groups (see the module docstring)."""

    def __init__(self, me: PeerId, *, relay: bool = False) -> None:
        self.me = me
        self.relay = relay  # a relay node: adopt a group that designates us its relay
        self.pending: dict[GroupId, GroupCore] = {}
        #: Per pending group: the bytes each peer sent for it.
        self.senders: dict[GroupId, dict[PeerId, int]] = {}

    def held(self) -> int:
        """Bytes of events we hold for unknown groups."""
        return sum(sum(by.values()) for by in self.senders.values())

    def held_from(self, peer: PeerId) -> int:
        """Bytes of events we hold for unknown groups that ``peer`` sent."""
        return sum(by.get(peer, 0) for by in self.senders.values())

    def peer_gone(self, peer: PeerId) -> int:
        """``peer``'s channel is gone: drop the groups only it fed; returns how many."""
        dropped = 0
        for group, by in list(self.senders.items()):
            by.pop(peer, None)
            if not by:
                self._drop(group)
                dropped += 1
        return dropped

    def _drop(self, group: GroupId) -> None:
        self.pending.pop(group, None)
        self.senders.pop(group, None)

    def receive(
        self, sender: PeerId, group: GroupId, events: list[Event],
        copies: tuple[tuple[EventId, bytes], ...] = (),
    ) -> Adopt | Warn:
        """Take in events of ``group``; ``Adopt`` if they made us a member, else why not."""
        size = sum(len(e.raw) for e in events)
        if self.held_from(sender) + size > MAX_BYTES_PER_PEER:
            held = self.senders.get(group, {}).get(sender, 0)
            if held and len(self.senders[group]) == 1:
                self._drop(group)
            return Warn(logging.WARNING, f"dropping events from {short_id(sender)} for group "
                        f"{group.hex()[:12]}, which we are not in: it sent more than "
                        f"{MAX_BYTES_PER_PEER} bytes for groups we are not in")
        while self.pending and self.held() + size > MAX_BYTES:
            oldest = next(iter(self.pending))
            if oldest == group:
                break  # (this group alone is under the per-peer cap)
            self._drop(oldest)
        core = self.pending.get(group)
        if core is None:
            if len(self.pending) >= MAX_GROUPS:
                self._drop(next(iter(self.pending)))
            core = self.pending[group] = GroupCore(group, max_buffer=MAX_EVENTS)
        by = self.senders.setdefault(group, {})
        by[sender] = by.get(sender, 0) + size
        for event in events:
            core.receive(event)
        if self.me in (core.state.relays if self.relay else core.state.members):
            self._drop(group)
            return Adopt(core, (*core.ordered(), *core.waiting()), copies)
        if core.size() > MAX_EVENTS:
            self._drop(group)
            return Warn(logging.WARNING, f"dropping {core.size()} events from "
                        f"{short_id(sender)} for group {group.hex()[:12]}, which we are not in")
        return Warn(logging.INFO, f"events from {short_id(sender)} for group {group.hex()[:12]}, "
                    f"which we are not in{'' if core.state.created else ' (no CREATE yet)'}: "
                    f"holding {core.size()}")
