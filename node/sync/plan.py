"""What a member lacks, and in which batches to send it (pure).

Theory of operation
-------------------
Delivery is causal and per-author contiguous, so a member's whole holding in
a group is its version vector ``{author: highest seq}``. A node holding events
in causal order (its storage order) sends a member exactly the events it
lacks by filtering that order through the member's vector: everything it
sends can be delivered on arrival, because each event's past is either
already at the member (below its vector) or earlier in the same stream.

``Batcher`` cuts that stream into messages of at most ``max_events`` events
and ``max_bytes`` bytes (never splitting an event), so a long history goes
out as a sequence of bounded messages without being held in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

from node.ids import PeerId


class Stored(Protocol):
    """What the planner needs of a stored event."""

    @property
    def author(self) -> PeerId: ...

    @property
    def seq(self) -> int: ...


E = TypeVar("E", bound=Stored)
T = TypeVar("T")


def lacks(vector: Mapping[PeerId, int], event: Stored) -> bool:
    """Does the member with ``vector`` lack ``event``?"""
    return event.seq > vector.get(event.author, 0)


def missing(stored_in_order: Iterable[E], vector: Mapping[PeerId, int]) -> Iterator[E]:
    """The events (in causal storage order) that a member with ``vector`` lacks."""
    return (e for e in stored_in_order if lacks(vector, e))


def behind(mine: Mapping[PeerId, int], theirs: Mapping[PeerId, int]) -> bool:
    """Do they lack anything we have?"""
    return any(n > theirs.get(author, 0) for author, n in mine.items())


class Batcher(Generic[T]):
    """Cuts a stream of (item, size) into bounded batches."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._batch: list[T] = []
        self._size = 0

    def add(self, item: T, size: int) -> list[T] | None:
        """Add an item; returns the full batch to send when adding it completed one."""
        self._batch.append(item)
        self._size += size
        if len(self._batch) >= self.max_events or self._size >= self.max_bytes:
            return self.flush()
        return None

    def flush(self) -> list[T] | None:
        """The partial batch, if any (call at the end of the stream)."""
        if not self._batch:
            return None
        batch, self._batch, self._size = self._batch, [], 0
        return batch
