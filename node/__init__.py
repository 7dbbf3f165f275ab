"""Kith: serverless, end-to-end encrypted group chat for a local network.

The Python API is ``node.api.python`` (``open_node``, ``Kith``); the version
numbers are in ``node.version``.
"""

from __future__ import annotations

from node.version import __version__

__all__ = ["__version__"]
