"""``CausalBuffer``: the events of one group waiting for their causal past (pure).

Theory of operation
-------------------
``GroupCore`` delivers an event only once everything in its vector clock is
delivered; an event that arrives early waits here, by author and seq, until
the core's drain finds it deliverable (``take``), rejects its author's
earlier event (``take_author``), or it is evicted. This module owns only the
waiting: which event is deliverable, and what a member may do, is the core's.

* **Bounds.** Memory held for others is bounded: at most
  ``max_per_author`` events and ``MAX_BUFFER_BYTES_PER_AUTHOR`` bytes of one
  author, ``max_total`` events and ``MAX_BUFFER_BYTES`` bytes in all.
  ``admit`` refuses what does not fit (the caller reports it ``Dropped``;
  sync fetches it again later), except an event deliverable at once, which
  only passes through.
* **Strangers go first.** Anyone can make up a key and sign junk with it, so
  a full buffer must not lock members out: when a member's event needs room,
  a waiting event of a non-member (its highest seq, of the first such author
  in arrival order) is evicted. A stranger's event never evicts anything.
* **Verified-signature memo.** A waiting event whose signature verified on
  arrival is remembered with the key that verified it, so delivery need not
  check it again. Only waiting events are listed (an entry leaves with its
  event), so the memo is bounded like the buffer.
* **Queries.** ``events``, ``by_author`` and ``gaps`` answer the core's
  ``waiting()``, ``buffered()`` and ``gaps()``: the clocks of waiting events
  say how far each author had got, hence how many events we know exist but
  do not have yet.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from node.group.events import Event, EventId
from node.ids import PeerId

MAX_BUFFER_PER_AUTHOR = 256
MAX_BUFFER = 4096
#: The same bounds in bytes (an event may be up to the channel's message cap): what
#: waits for its causal past never holds more than this, per author and in all.
MAX_BUFFER_BYTES_PER_AUTHOR = 4 * 1024 * 1024
MAX_BUFFER_BYTES = 16 * 1024 * 1024


class CausalBuffer:
    def __init__(self, max_per_author: int = MAX_BUFFER_PER_AUTHOR,
                 max_total: int = MAX_BUFFER) -> None:
        self.max_per_author = max_per_author
        self.max_total = max_total
        #: author -> seq -> waiting event. An author's entry, once made, keeps its
        #: place (arrival order decides which stranger is evicted first).
        self._waiting: dict[PeerId, dict[int, Event]] = {}
        self._count = 0
        self.bytes = 0
        self._verified: dict[EventId, bytes] = {}

    def copy(self) -> CausalBuffer:
        """An independent copy (events are immutable: only the containers are copied)."""
        twin = CausalBuffer(self.max_per_author, self.max_total)
        twin._waiting = {a: dict(v) for a, v in self._waiting.items()}
        twin._count = self._count
        twin.bytes = self.bytes
        twin._verified = dict(self._verified)
        return twin

    # -- queries --

    def __len__(self) -> int:
        return self._count

    def get(self, author: PeerId, seq: int) -> Event | None:
        return self._waiting.get(author, {}).get(seq)

    def is_waiting(self, event: Event) -> bool:
        waiting = self.get(event.author, event.seq)
        return waiting is not None and waiting.id == event.id

    def authors(self) -> list[PeerId]:
        """The authors with an entry, in arrival order (a copy: safe to change while used)."""
        return list(self._waiting)

    def events(self) -> list[Event]:
        return [e for seqs in self._waiting.values() for e in seqs.values()]

    def by_author(self) -> dict[PeerId, list[int]]:
        return {a: sorted(seqs) for a, seqs in self._waiting.items() if seqs}

    def gaps(self, frontier: Mapping[PeerId, int]) -> dict[PeerId, int]:
        """Per author, how many events the waiting ones show exist beyond ``frontier``
        (the delivered ones) and are neither delivered nor waiting."""
        needed: dict[PeerId, int] = {}
        for author, waiting in self._waiting.items():
            for event in waiting.values():
                needed[author] = max(needed.get(author, 0), event.seq - 1)
                for who, count in event.clock:
                    needed[who] = max(needed.get(who, 0), count)
        missing = {
            a: n - frontier.get(a, 0)
            - sum(1 for q in self._waiting.get(a, {}) if frontier.get(a, 0) < q <= n)
            for a, n in needed.items()
        }
        return {a: m for a, m in missing.items() if m > 0}

    # -- adding --

    def admit(self, event: Event, members: Collection[PeerId], *, deliverable: bool) -> bool:
        """Add ``event`` (no event of its author and seq waits) if it fits, evicting
        strangers' events to make room for a member's; False (nothing added) if not.
        An event ``deliverable`` at once is always added: the drain takes it next."""
        author = event.author
        waiting = self._waiting.setdefault(author, {})
        size = len(event.raw)
        if not deliverable and (
            len(waiting) >= self.max_per_author
            or sum(len(e.raw) for e in waiting.values()) + size > MAX_BUFFER_BYTES_PER_AUTHOR
            or (self._count >= self.max_total and not self._evict_stranger(author, members))
            or not self._room_for(size, author, members)
        ):
            return False
        waiting[event.seq] = event
        self._count += 1
        self.bytes += size
        return True

    def replace(self, event: Event) -> None:
        """Put ``event`` in place of the other event waiting with its author and seq."""
        waiting = self._waiting.setdefault(event.author, {})
        queued = waiting[event.seq]
        self._verified.pop(queued.id, None)
        self.bytes += len(event.raw) - len(queued.raw)
        waiting[event.seq] = event

    def remember_verified(self, event_id: EventId, key: bytes) -> None:
        """The waiting event ``event_id``'s signature verified with ``key``."""
        self._verified[event_id] = key

    def verified_key(self, event_id: EventId) -> bytes | None:
        """The key a waiting event's signature verified with on arrival, if it did."""
        return self._verified.get(event_id)

    # -- removing --

    def take(self, author: PeerId, seq: int) -> Event:
        """Remove the waiting event (author, seq) for delivery. Its memo entry stays
        until ``take_verified``: delivery reads it."""
        event = self._waiting[author].pop(seq)
        self._count -= 1
        self.bytes -= len(event.raw)
        return event

    def take_verified(self, event_id: EventId) -> bytes | None:
        """``verified_key``, forgetting it (the event is being delivered)."""
        return self._verified.pop(event_id, None)

    def take_author(self, author: PeerId) -> list[Event]:
        """Remove every waiting event of ``author`` (they follow a rejected one)."""
        taken = list(self._waiting.pop(author, {}).values())
        for event in taken:
            self._verified.pop(event.id, None)
            self._count -= 1
            self.bytes -= len(event.raw)
        return taken

    def _room_for(self, size: int, author: PeerId, members: Collection[PeerId]) -> bool:
        """Make the buffer's bytes hold ``size`` more (evicting strangers' events)."""
        while self.bytes + size > MAX_BUFFER_BYTES:
            if not self._evict_stranger(author, members):
                return False
        return True

    def _evict_stranger(self, newcomer: PeerId, members: Collection[PeerId]) -> bool:
        """Make room for ``newcomer``'s event by dropping a waiting event of an author
        who is not a member; False if there is no such event (or ``newcomer`` is no
        member either)."""
        if newcomer not in members:
            return False
        for author, waiting in self._waiting.items():
            if author not in members and waiting:
                evicted = waiting.pop(max(waiting))
                self._verified.pop(evicted.id, None)
                self._count -= 1
                self.bytes -= len(evicted.raw)
                return True
        return False
