"""``PeerNames``: the display name each peer last gave us, kept across restarts.

A peer names itself in its handshake (``Hello``); the mesh keeps that name only while
the node runs. Stored messages outlive it: after a restart, the authors who are away
would be shown by their short id while membership lines still say "added bob" (the ADD
event carries the adder's label for bob, but nobody labels the group's creator). So the
name each peer last gave is stored (``peer_names``) and looked up after the live one.

Precedence when naming a peer (``node.api.views.name_of``): the name on a live channel,
then the name stored here, then the label an ADD or JOIN event gave, then the short id.
"""

from __future__ import annotations

import logging
import time

from node.errors import StorageError
from node.ids import PeerId, short_id
from node.store.db import Store

log = logging.getLogger(__name__)


class PeerNames:
    """The stored names, cached in memory (a log view names every author)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._names = store.peer_names()

    def get(self, peer: PeerId) -> str | None:
        return self._names.get(peer)

    def heard(self, peer: PeerId, name: str, now: float | None = None) -> None:
        """``peer`` named itself ``name`` on a new channel: remember it if it is new."""
        if not name or name == short_id(peer) or self._names.get(peer) == name:
            return  # no name given (the channel shows the short id), or nothing new
        self._names[peer] = name
        try:
            self._store.set_peer_name(peer, name, time.time() if now is None else now)
        except StorageError as exc:  # a name is a nicety: a full disk must not cost more
            log.debug("cannot store the name of %s: %s", short_id(peer), exc)
