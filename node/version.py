"""Version numbers: of this package, and of the wire protocol it speaks.

A leaf module (it imports nothing from ``node``), so the channel core, the mDNS
records and the command line can all read the protocol version without
importing the package's heavier modules, or each other.
"""

from __future__ import annotations

#: Version of the ``kith`` package (``kith --version``).
__version__ = "0.1.0"

#: Version of the Kith wire protocol spoken by this implementation: sent in the
#: channel's HELLO and in the mDNS record; a peer speaking another one is refused.
PROTOCOL_VERSION = 1
