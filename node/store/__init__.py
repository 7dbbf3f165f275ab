"""The node's SQLite store (see ``node.store.db`` for how it works, ``schema`` for the tables)."""

from __future__ import annotations

from node.store.db import EventRow, GroupRow, SeqConflictError, Store

__all__ = ["EventRow", "GroupRow", "SeqConflictError", "Store"]
