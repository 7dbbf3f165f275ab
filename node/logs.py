"""Log lines a peer cannot amplify.

Anything a peer does that a node logs (a malformed message, a refused event, a
handshake from a flooding address) can be repeated by that peer as fast as it can
send. Drivers therefore log such lines through a ``LogLimiter``: at most one line
per key (usually ``(peer, reason)``) per interval; the lines held back are counted
and the count is reported on the next line that passes, so nothing is hidden, it is
only summed up. The set of keys is bounded too (oldest forgotten first), so many
sources cannot make the limiter itself grow.

``clip`` bounds peer-supplied text before it is logged or shown: control characters
are escaped and anything past the limit is replaced by a count.

``LogLimiter`` is pure (``now`` comes in); ``RateLimitedLog`` is the drivers'
convenience wrapper that reads the monotonic clock.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Hashable

#: Default window: one line per key per this many seconds.
DEFAULT_INTERVAL = 10.0
#: Keys remembered at once; the oldest is forgotten first.
DEFAULT_MAX_KEYS = 512
#: Default limit, in code points, for peer-supplied text in a log line.
TEXT_LIMIT = 200


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` safe to log: control characters escaped, at most ``limit`` code points kept."""
    out = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256
                  else f"\\u{ord(ch):04x}" for ch in text[:limit])
    if len(text) > limit:
        out += f"... ({len(text) - limit} more characters)"
    return out


_ID_OR_NUMBER = re.compile(r"\b[0-9a-f]{8,}\b|\d+")


def line_key(text: str) -> str:
    """What makes two lines "the same line" for rate limiting: the text with hex ids and
    numbers blanked (peers' short ids, base32, stay: each peer is limited on its own)."""
    return _ID_OR_NUMBER.sub("#", text)


def reason_key(text: str) -> str:
    """The first words of a reason (ids and numbers blanked): a key a peer cannot vary
    at will by choosing what goes into the end of an error message."""
    return line_key(text)[:16]


class LogLimiter:
    """Decide which repeated lines to log: at most one per key per ``interval``."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, max_keys: int = DEFAULT_MAX_KEYS):
        self.interval = interval
        self.max_keys = max_keys
        # key -> [time of the last line logged, lines held back since]
        self._keys: OrderedDict[Hashable, list[float]] = OrderedDict()

    def check(self, key: Hashable, now: float) -> int | None:
        """``None`` to hold the line back, else how many were held back before it."""
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        held = 0 if entry is None else int(entry[1])
        self._keys[key] = [now, 0.0]
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return held

    def __len__(self) -> int:
        return len(self._keys)


class RateLimitedLog:
    """A logger whose lines are limited per key (see ``LogLimiter``)."""

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL,
                 max_keys: int = DEFAULT_MAX_KEYS):
        self.logger = logger
        self.limiter = LogLimiter(interval, max_keys)

    def log(self, key: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line with this key was logged recently; True if logged."""
        if not self.logger.isEnabledFor(level):
            return False
        held = self.limiter.check(key, time.monotonic())
        if held is None:
            return False
        if held:
            msg += " (and %d more like it)"
            args = (*args, held)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        return self.log(key, logging.INFO, msg, *args)
