"""Kith: serverless, end-to-end encrypted group chat for a local network."""

from __future__ import annotations

__version__ = "0.1.0"

#: Version of the Kith wire protocol spoken by this implementation.
PROTOCOL_VERSION = 1
