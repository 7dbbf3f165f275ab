"""``App``: the composition root, one running Kith node with its data directory.

It builds the peer manager (``node.node.Node``), opens the store (SQLite in the
data directory), builds the group service over both, and runs them with LAN
discovery and the control socket, wired together: what arrives on a channel
goes to the group service, each new channel is reported to it, and discovery
announces and hears its open groups.

This is the only module that imports ``net``, ``service`` and ``api`` together.
Below it, the services see the peer manager only as ``PeerLinks``
(``node.service.links``), and the API sees this object only as ``NodeApp``
(``node.api.context``); neither imports this module.

``kith run``, ``kith chat`` and ``node.api.python.open_node`` each run one ``App``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from node.api.pending_sends import send_queued, send_queued_files
from node.api.server import serve_control
from node.config import Config
from node.crypto.keys import IdentityKey
from node.datadir import DataDir
from node.errors import StoragePausedError, StorageUnavailableError
from node.ids import PeerId
from node.net.address import DialTarget
from node.net.connection import PeerConnection
from node.node import Node
from node.service.groups import GroupService
from node.store.db import Store

if TYPE_CHECKING:
    from node.net.lan import DiscoverySource

#: The node's SQLite database, in its data directory.


class App:
    """A node with its data directory. ``await nursery.start(app.run, peers)``; cancel to stop.

    ``discovery`` replaces real mDNS (when ``config.mdns``) with another source of
    announcements: tests use a fake one.
    """

    def __init__(
        self,
        identity: IdentityKey,
        config: Config,
        data_dir: DataDir,
        *,
        discovery: DiscoverySource | None = None,
    ) -> None:
        self.data_dir = data_dir
        #: The peer manager: identity, listeners, dialers, one channel per peer.
        self.node = Node(identity, config, on_message=self._on_message,
                         on_connected=self._on_connected,
                         on_disconnected=self._on_disconnected)
        #: The groups, over the store; built by ``run`` before the node listens.
        self.groups: GroupService | None = None
        self._discovery = discovery

    async def run(
        self,
        peers: Sequence[DialTarget] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open the store, listen, serve the control socket, dial ``peers``; until cancelled.

        Started (and the "listening on" line logged) once the control socket
        answers, so whoever waits for that line can use ``kith`` commands at once.
        """
        store = Store.open(self.data_dir.database_file)
        try:
            self.groups = groups = GroupService(self.node, store)
            async with self.node.listening(), trio.open_nursery() as nursery:
                await nursery.start(groups.run)
                send_queued(self.data_dir, groups)  # what `kith send` queued while stopped
                nursery.start_soon(send_queued_files, self.data_dir, groups)  # (--file)
                await nursery.start(serve_control, self, self.data_dir.control_socket)
                for target in peers:
                    self.node.dial(target)
                if self.node.config.mdns:  # zeroconf (and asyncio) load only if used
                    from node.net.lan import LanDiscovery

                    lan = LanDiscovery(self.node, self._discovery, groups)
                    await nursery.start(lan.run)
                self.node.log_listening()
                task_status.started()
        finally:
            store.close()

    async def _on_message(self, conn: PeerConnection, data: bytes) -> None:
        assert self.groups is not None, "the group service is built before the node listens"
        try:
            await self.groups.on_message(conn, data)
        except StorageUnavailableError as exc:
            # A write outside the member cores (a group we were just added to) met a full
            # disk: the message is dropped unacknowledged, the peer sends it again.
            self.groups.storage_failed(exc)
        except StoragePausedError:
            pass  # the same, noticed before writing

    def _on_connected(self, peer: PeerId) -> None:
        if self.groups is not None:
            known = self.node.mesh.known.get(peer)
            if known is not None:  # the name from its handshake, kept for after a restart
                self.groups.names.heard(peer, known.name)
            self.groups.peer_connected(peer)

    def _on_disconnected(self, peer: PeerId) -> None:
        if self.groups is not None:
            self.groups.peer_disconnected(peer)
