"""Who may connect: handshake slots shared between source addresses, a cap on channels.

Theory of operation
-------------------
Everything a stranger can make a node hold before it knows who the stranger is
costs a file descriptor: a connection in the handshake, and a completed channel
(which needs only a throwaway key when no network key is set). Running out of
descriptors must never end the node, and one flooding host must not keep
everybody else out. So, at every accepted connection, ``Admission.admit``
decides (purely, from counts) whether it may start a handshake:

* at most ``Limits.channels`` channels open: beyond, new connections are closed
  at once (channels this node dials itself are never refused: what it dials is
  bounded by ``--peer`` and by the mDNS candidate cap);
* at most ``Limits.handshakes`` handshakes in progress in all;
* at most ``Limits.per_address`` of them from any one source address, so a
  host that keeps reopening connections holds a quarter of the slots at most
  and the others stay free for everybody else.

``fit_to_descriptors`` lowers the configured caps when the process's descriptor
limit (``ulimit -n``) cannot hold them beside what the node needs for itself.

Should descriptors (or kernel memory) run out anyway, ``accept`` pauses briefly
and goes on instead of raising: the TCP listener and the control socket both
accept through it. Each refusal and each such pause is logged through a
``RateLimitedLog``, so a flood costs one line per interval, with a count.
"""

from __future__ import annotations

import enum
import errno
import resource
from dataclasses import dataclass
from typing import TypeVar

import trio

from node.logs import RateLimitedLog

#: accept() errors that mean "out of a resource", not "this listener is broken".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Seconds to wait after such an error before accepting again (the pending
#: connection stays in the kernel's queue, so retrying at once would spin).
ACCEPT_PAUSE = 0.1
#: Descriptors kept for the node itself: standard streams, the store (database,
#: journal), listeners, the control socket and its clients, mDNS, files being
#: written, and the channels it dials.
RESERVED_DESCRIPTORS = 128

S = TypeVar("S", bound=trio.abc.AsyncResource)


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps a node enforces at accept."""

    channels: int
    handshakes: int
    per_address: int


def share_per_address(handshakes: int) -> int:
    """Handshake slots one source address may hold: a quarter, at least 2."""
    return max(2, handshakes // 4)


def limits(channels: int, handshakes: int) -> Limits:
    return Limits(channels, handshakes, min(handshakes, share_per_address(handshakes)))


def fit_to_descriptors(channels: int, handshakes: int, descriptors: int) -> Limits:
    """The caps, lowered if ``descriptors`` cannot hold them beside the node's own needs."""
    budget = descriptors - RESERVED_DESCRIPTORS
    if channels + handshakes <= budget:
        return limits(channels, handshakes)
    fit_handshakes = max(2, min(handshakes, budget // 5))
    fit_channels = max(1, min(channels, budget - fit_handshakes))
    return limits(fit_channels, fit_handshakes)


def descriptor_limit() -> int:
    """This process's soft limit on open descriptors (``ulimit -n``)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Refusal(enum.Enum):
    """Why a connection was closed at accept."""

    CHANNELS = "channels"
    HANDSHAKES = "handshakes"
    ADDRESS = "address"


class Admission:
    """Handshakes in progress, in all and per source address (pure: no I/O, no clock)."""

    def __init__(self, caps: Limits) -> None:
        self.limits = caps
        self.handshaking = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str, channels: int) -> Refusal | None:
        """Take a handshake slot for a connection from ``address``, or say why not.

        ``channels``: how many channels are open now. A ``None`` answer must be
        matched by one ``done(address)`` when the handshake ends, however it ends.
        """
        if channels >= self.limits.channels:
            return Refusal.CHANNELS
        if self.handshaking >= self.limits.handshakes:
            return Refusal.HANDSHAKES
        held = self._by_address.get(address, 0)
        if held >= self.limits.per_address:
            return Refusal.ADDRESS
        self._by_address[address] = held + 1
        self.handshaking += 1
        return None

    def done(self, address: str) -> None:
        """The handshake of a connection from ``address`` ended (either way)."""
        held = self._by_address[address] - 1
        if held:
            self._by_address[address] = held
        else:
            del self._by_address[address]
        self.handshaking -= 1

    def held_by(self, address: str) -> int:
        return self._by_address.get(address, 0)


async def accept(listener: trio.abc.Listener[S], log: RateLimitedLog, what: str) -> S:
    """``listener.accept()``, pausing and retrying while descriptors or memory run out.

    Logs one line per ``what`` and error per interval. Other errors propagate.
    """
    while True:
        try:
            return await listener.accept()
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRNOS:
                raise
            log.warning(("accept", what, exc.errno),
                        "cannot accept %s: %s; pausing %g s and going on",
                        what, exc.strerror or errno.errorcode.get(exc.errno or 0, "?"),
                        ACCEPT_PAUSE)
        await trio.sleep(ACCEPT_PAUSE)
