"""``NodeApp``: what the control socket and the Python API drive, as a protocol.

The composition root (``node.app.App``) builds the peer manager and the group
service and starts the control socket with itself as the ``NodeApp``; the API
modules type against this protocol, so they never import the composition root
(which imports them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from node.node import Node
    from node.service.groups import GroupService


class NodeApp(Protocol):
    """A running node: its peer manager and, with a data directory, its groups."""

    @property
    def node(self) -> Node:
        """The peer manager: identity, listening addresses, channels, the mesh."""
        ...

    @property
    def groups(self) -> GroupService | None:
        """The group service; None until the node has opened its store."""
        ...
