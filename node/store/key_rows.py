"""Rows that carry secrets or proofs: sender keys, pairwise copies, delivery receipts
and equivocations (part of ``node.store.db.Store``; no protocol logic).

``KeyRows`` is a base of ``Store``: its methods run one SQL statement each through the
store's plumbing (``_write``, ``_fetchone``, ``_fetchall``), so they join the caller's
``transaction()`` like every other write. Chain keys are packed with their skipped
message keys in one blob; ``secure_delete`` (set by the store) zeroes what an update frees.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any

from node.crypto.sender_keys import OwnSenderKey, SenderKeyState
from node.errors import StorageError
from node.ids import PUBLIC_KEY_LEN, EventId, GroupId, PeerId

#: Largest integer SQLite stores (INTEGER is a signed 64-bit value).
MAX_INTEGER = 2**63 - 1

_SKIPPED_RECORD = struct.Struct(">Q32s")
_MESSAGE_KEY_LEN = 32


def _check_integer(value: int, what: str) -> int:
    if not 0 <= value <= MAX_INTEGER:
        raise StorageError(f"cannot store {what} {value}: outside 0..2^63-1")
    return int(value)


def _pack_peers(peers: Iterable[PeerId]) -> bytes:
    unique = set(peers)
    for peer in unique:
        if len(peer) != PUBLIC_KEY_LEN:
            raise StorageError(f"cannot store a peer id of {len(peer)} bytes (expected 32)")
    return b"".join(sorted(unique))


def _unpack_peers(blob: bytes) -> frozenset[PeerId]:
    n = PUBLIC_KEY_LEN
    return frozenset(PeerId(blob[i : i + n]) for i in range(0, len(blob), n))


def _pack_skipped(skipped: tuple[tuple[int, bytes], ...]) -> bytes:
    parts = []
    for index, key in skipped:
        _check_integer(index, "a skipped key index")
        if len(key) != _MESSAGE_KEY_LEN:
            raise StorageError(f"cannot store a skipped message key of {len(key)} bytes")
        parts.append(_SKIPPED_RECORD.pack(index, key))
    return b"".join(parts)


def _unpack_skipped(blob: bytes) -> tuple[tuple[int, bytes], ...]:
    if len(blob) % _SKIPPED_RECORD.size:
        raise StorageError(f"stored skipped keys are corrupt ({len(blob)} bytes)")
    return tuple((index, key) for index, key in _SKIPPED_RECORD.iter_unpack(blob))


class KeyRows:
    """Sender keys, copies, receipts and equivocations (see the module docstring)."""

    def _write(self, action: str, sql: str, params: tuple[object, ...]) -> int:
        raise NotImplementedError

    def _fetchall(self, action: str, sql: str, params: tuple[object, ...]) -> list[Any]:
        raise NotImplementedError

    def _fetchone(self, action: str, sql: str, params: tuple[object, ...]) -> Any:
        raise NotImplementedError

    # -- pairwise copies -----------------------------------------------------------------

    def add_copy(self, group: GroupId, event: EventId, recipient: PeerId, blob: bytes) -> None:
        """Store the ciphertext of ``event`` for ``recipient``, replacing any earlier one."""
        self._write(
            "store copy",
            "INSERT INTO copies (event, recipient, group_id, blob) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (event, recipient) DO UPDATE"
            " SET group_id = excluded.group_id, blob = excluded.blob",
            (event, recipient, group, blob),
        )

    def copy(self, event: EventId, recipient: PeerId) -> bytes | None:
        r = self._fetchone(
            "read copy", "SELECT blob FROM copies WHERE event = ? AND recipient = ?",
            (event, recipient),
        )
        return None if r is None else bytes(r[0])

    def copies(self, event: EventId) -> dict[PeerId, bytes]:
        """Every stored copy of ``event``, by recipient."""
        rows = self._fetchall(
            "read copies", "SELECT recipient, blob FROM copies WHERE event = ?", (event,)
        )
        return {PeerId(recipient): blob for recipient, blob in rows}

    # -- sender keys ---------------------------------------------------------------------

    def save_own_key(
        self, group: GroupId, epoch: int, key: OwnSenderKey, recipients: Iterable[PeerId]
    ) -> None:
        """Replace our sender key for ``group``: its epoch, state and recipients."""
        _check_integer(epoch, "epoch")
        _check_integer(key.index, "sender key index")
        self._write(
            "store own sender key",
            "INSERT INTO own_keys (group_id, epoch, chain_key, next_index, signing_seed,"
            " recipients) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch,"
            " chain_key = excluded.chain_key, next_index = excluded.next_index,"
            " signing_seed = excluded.signing_seed, recipients = excluded.recipients",
            (group, int(epoch), key.chain_key, int(key.index), key.signing_seed,
             _pack_peers(recipients)),
        )

    def save_own_history(self, group: GroupId, epoch: int, key: OwnSenderKey) -> None:
        """Keep the starting state of one of our epochs (groups that share history)."""
        _check_integer(epoch, "epoch")
        _check_integer(key.index, "sender key index")
        self._write(
            "store sender key history",
            "INSERT OR IGNORE INTO own_history (group_id, epoch, chain_key, next_index,"
            " signing_seed) VALUES (?, ?, ?, ?, ?)",
            (group, int(epoch), key.chain_key, int(key.index), key.signing_seed),
        )

    def own_history(self, group: GroupId) -> list[tuple[int, OwnSenderKey]]:
        """The starting state of each of our epochs in ``group``, oldest first."""
        rows = self._fetchall(
            "read sender key history",
            "SELECT epoch, chain_key, next_index, signing_seed FROM own_history"
            " WHERE group_id = ? ORDER BY epoch", (group,),
        )
        return [(int(e), OwnSenderKey(bytes(ck), int(i), bytes(seed))) for e, ck, i, seed in rows]

    def own_key(self, group: GroupId) -> tuple[int, OwnSenderKey, frozenset[PeerId]] | None:
        """Our sender key for ``group`` as (epoch, key, recipients), or ``None``."""
        r = self._fetchone(
            "read own sender key",
            "SELECT epoch, chain_key, next_index, signing_seed, recipients"
            " FROM own_keys WHERE group_id = ?", (group,),
        )
        if r is None:
            return None
        epoch, chain_key, index, seed, recipients = r
        return epoch, OwnSenderKey(chain_key, index, seed), _unpack_peers(recipients)

    def save_peer_key(
        self, group: GroupId, author: PeerId, epoch: int, state: SenderKeyState
    ) -> None:
        """Replace our state of ``author``'s sender key for ``epoch`` in ``group``."""
        _check_integer(epoch, "epoch")
        _check_integer(state.index, "sender key index")
        self._write(
            "store sender key",
            "INSERT INTO peer_keys (group_id, author, epoch, chain_key, next_index,"
            " signing_public, skipped) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (group_id, author, epoch) DO UPDATE SET"
            " chain_key = excluded.chain_key, next_index = excluded.next_index,"
            " signing_public = excluded.signing_public, skipped = excluded.skipped",
            (group, author, int(epoch), state.chain_key, int(state.index),
             state.signing_public, _pack_skipped(state.skipped)),
        )

    def peer_key(self, group: GroupId, author: PeerId, epoch: int) -> SenderKeyState | None:
        """Our state of one sender key, or ``None``."""
        r = self._fetchone(
            "read sender key",
            "SELECT chain_key, next_index, signing_public, skipped FROM peer_keys"
            " WHERE group_id = ? AND author = ? AND epoch = ?", (group, author, epoch),
        )
        return None if r is None else SenderKeyState(r[0], r[1], r[2], _unpack_skipped(r[3]))

    def peer_keys(self, group: GroupId) -> dict[tuple[PeerId, int], SenderKeyState]:
        """Every sender key we hold for ``group``, by (author, epoch)."""
        rows = self._fetchall(
            "read sender keys",
            "SELECT author, epoch, chain_key, next_index, signing_public, skipped"
            " FROM peer_keys WHERE group_id = ? ORDER BY author, epoch", (group,),
        )
        return {
            (PeerId(author), epoch): SenderKeyState(ck, index, public, _unpack_skipped(skipped))
            for author, epoch, ck, index, public, skipped in rows
        }

    # -- delivery receipts ---------------------------------------------------------------

    def add_delivery(self, group: GroupId, event: EventId, member: PeerId, at: float) -> None:
        """Record that ``member`` has stored ``event`` (idempotent: the first ``at`` is kept)."""
        self._write(
            "store delivery",
            "INSERT INTO deliveries (event, member, group_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (event, member) DO NOTHING",
            (event, member, group, at),
        )

    def deliveries(self, group: GroupId) -> dict[EventId, dict[PeerId, float]]:
        """Receipts of ``group``: event id -> member -> when it was first reported."""
        rows = self._fetchall(
            "read deliveries",
            "SELECT event, member, at FROM deliveries WHERE group_id = ? ORDER BY rowid",
            (group,),
        )
        result: dict[EventId, dict[PeerId, float]] = {}
        for event, member, at in rows:
            result.setdefault(EventId(event), {})[PeerId(member)] = at
        return result

    # -- equivocations -------------------------------------------------------------------

    def add_equivocation(
        self, group: GroupId, author: PeerId, seq: int, first: EventId, second_raw: bytes,
        at: float,
    ) -> bool:
        """Record a second event for (group, author, seq); ``False`` if already recorded."""
        _check_integer(seq, "seq")
        digest = hashlib.blake2b(second_raw, digest_size=32).digest()
        return self._write(
            "store equivocation",
            "INSERT INTO equivocations (group_id, author, seq, first, second_raw,"
            " second_digest, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (group_id, author, seq, second_digest) DO NOTHING",
            (group, author, int(seq), first, second_raw, digest, at),
        ) == 1

    def equivocations(self, group: GroupId) -> list[tuple[PeerId, int, EventId, bytes, float]]:
        """Recorded equivocations as (author, seq, first id, second raw, at), oldest first."""
        rows = self._fetchall(
            "read equivocations",
            "SELECT author, seq, first, second_raw, at FROM equivocations"
            " WHERE group_id = ? ORDER BY pos", (group,),
        )
        return [(PeerId(a), s, EventId(f), raw, at) for a, s, f, raw, at in rows]
