"""One exception tree for all of Kith.

``KithError`` is the root. A caller that wants to show "one clear line, not a
traceback" catches ``KithError`` and prints ``str(exc)``. Errors raised because a
*remote* party broke the rules (``RemoteProtocolError``, ``HandshakeError``,
``DecryptError``) drop that peer or that input and nothing else; errors raised
because *we* misused an API (``LocalProtocolError``) are bugs.
"""

from __future__ import annotations


class KithError(Exception):
    """Root of every error Kith raises on purpose."""


class ConfigError(KithError):
    """Bad configuration, data directory or key file: the user must fix something."""


class GroupError(KithError):
    """A group operation the user asked for cannot be done (one clear line)."""


class StorageError(KithError):
    """The node's files could not be read or written."""


class StorageUnavailableError(StorageError):
    """A write failed for a reason that passes: a full disk, an I/O error, a busy database.

    ``reason`` says which in a few words ("disk full"). The node pauses its writes and
    tries again later instead of giving up (``node.service.driver``).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoragePausedError(StorageError, GroupError):
    """Refused: the node cannot write now, so it authors nothing (one clear line).

    Also a ``GroupError``, so whoever handles a refused group operation handles this.
    """


class ProtocolError(KithError):
    """A protocol rule was broken, by us or by the peer."""


class LocalProtocolError(ProtocolError):
    """We used a protocol object in a way its state machine does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class HandshakeError(RemoteProtocolError):
    """The Noise handshake failed: wrong key, wrong network key, not a Kith peer."""


class DecryptError(RemoteProtocolError):
    """Authenticated decryption failed: the data was corrupted or forged."""


class NotRunningError(KithError):
    """No node is running for this data directory (the control socket is absent)."""

