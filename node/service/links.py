"""``PeerLinks``: what the services need of the peer manager, as a narrow protocol.

The services (groups, sync, files, open groups) talk to other members through
the node's channels, but they do not depend on the peer manager's class
(``node.node.Node``), nor on the connection class (``PeerConnection``): they
type against these protocols, which both satisfy structurally. So the
peer manager never has to be imported to type-check a service, the services can
be driven by a fake in tests, and the composition root (``node.app``) is the
one place that puts a real peer manager and the services together.

What the services do with it:

* fan out and answer: ``connections[peer].send_nowait(data)``, which never blocks
  (a full queue drops that peer: ``node.net.connection``), and ``queued`` and
  ``wait_queue_below`` for senders that pace themselves (file chunks, local sends);
* ask who is connected (``peer in connections``) and wait for a change
  (``wait_until``), dial a member of an open group once (``connect``);
* read who we are (``identity``, ``peer_id``, ``name``, the mDNS ``instance``) and
  the ``config``;
* for the views of the API, who is known and how present (``mesh``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from node.config import Config
from node.crypto.keys import IdentityKey
from node.ids import PeerId
from node.mesh.state import MeshState
from node.net.address import DialTarget


class LinkInfo(Protocol):
    """Who is at the other end of a channel."""

    @property
    def peer_id(self) -> PeerId: ...


class PeerLink(Protocol):
    """One authenticated channel to one peer, as the services use it."""

    @property
    def info(self) -> LinkInfo: ...

    def send_nowait(self, data: bytes) -> bool:
        """Queue ``data`` without blocking; False if the channel is gone or was dropped."""
        ...

    def queued(self) -> int:
        """How many messages are queued for this peer now."""
        ...

    async def wait_queue_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` messages are queued for this peer."""
        ...

    def close(self, reason: str) -> None:
        """End the channel, telling the peer ``reason``."""
        ...


class PeerLinks(Protocol):
    """The node's channels and identity, as the services see them."""

    @property
    def identity(self) -> IdentityKey: ...

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> Config: ...

    @property
    def instance(self) -> str | None:
        """This run's mDNS instance name (None when mDNS is off)."""
        ...

    @property
    def connections(self) -> Mapping[PeerId, PeerLink]:
        """The one channel per connected peer."""
        ...

    @property
    def mesh(self) -> MeshState:
        """Every peer known, with its name and presence (online, reachable, offline)."""
        ...

    async def connect(self, target: DialTarget) -> object:
        """Dial ``target`` once and serve the channel; raise if it cannot be set up."""
        ...

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after each peer change."""
        ...
