"""Kith: serverless, end-to-end encrypted group chat for a local network."""

from __future__ import annotations

__version__ = "0.1.0"

#: Version of the Kith wire protocol spoken by this implementation.
PROTOCOL_VERSION = 1


def __getattr__(name: str) -> object:
    # ``from node import open_node, Kith``: the Python API, imported on first use only.
    if name in ("open_node", "Kith"):
        from node.api import python

        return getattr(python, name)
    raise AttributeError(name)
