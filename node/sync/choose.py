"""Whom a lagging member asks for what it lacks (pure).

Theory of operation
-------------------
After a heal, every member that holds what a lagging member lacks learns so
from the lagging member's vector; if each of them streamed it, the lagging
member would receive it once per such member. Instead the lagging member
itself asks exactly one of them (a ``vv`` with ``want: true``) and waits for
that stream to finish before asking anyone else for what is still missing.

The choice is deterministic, from the vectors the lagging member holds:

1. the candidate whose vector covers the most of what we lack (counted in
   events: for each author, how far its seq reaches past ours);
2. among those, the one that authored the most of it (an author sends its own
   events with what only it holds: a pairwise copy, its sealed key);
3. then by a hash of (our id, its id), so that many lagging members that face
   the same equally good candidates spread over them instead of all asking the
   one with the smallest id.

Candidates that did not deliver (no batch within the request timeout) are left
out for a while by the caller, so a peer that claims to hold everything and
sends nothing delays sync once per back-off, never for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from node.ids import PeerId

Vec = Mapping[PeerId, int]


def covers(have: Vec, vector: Vec) -> bool:
    """Does ``have`` hold everything ``vector`` names?"""
    return all(n <= have.get(author, 0) for author, n in vector.items())


def coverage(mine: Vec, theirs: Vec) -> int:
    """How many events ``theirs`` holds that ``mine`` lacks (per author, the seqs past ours)."""
    return sum(max(0, n - mine.get(author, 0)) for author, n in theirs.items())


def rank(me: PeerId, mine: Vec, peer: PeerId, theirs: Vec) -> tuple[int, int, bytes]:
    """Sort key: lower is better (see the module docstring)."""
    own = max(0, theirs.get(peer, 0) - mine.get(peer, 0))
    spread = hashlib.blake2b(bytes(me) + bytes(peer), digest_size=8).digest()
    return (-coverage(mine, theirs), -own, spread)


def choose(me: PeerId, mine: Vec, candidates: Mapping[PeerId, Vec]) -> PeerId | None:
    """The candidate to ask for what we lack, or None if none holds anything we lack."""
    best: tuple[tuple[int, int, bytes], PeerId] | None = None
    for peer, theirs in candidates.items():
        if peer == me or coverage(mine, theirs) == 0:
            continue
        key = rank(me, mine, peer, theirs)
        if best is None or key < best[0]:
            best = (key, peer)
    return None if best is None else best[1]


def nudge_order(me: PeerId, peers: list[PeerId], salt: int) -> list[PeerId]:
    """``peers`` in a deterministic order that differs per member and per ``salt``
    (which members a catch-up nudge goes to first)."""
    def key(peer: PeerId) -> bytes:
        data = bytes(me) + bytes(peer) + salt.to_bytes(8, "big", signed=False)
        return hashlib.blake2b(data, digest_size=8).digest()
    return sorted(peers, key=key)
