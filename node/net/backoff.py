"""Exponential backoff with jitter for redialling (pure: randomness injected).

The delay doubles from ``initial`` up to ``cap``; each delay is spread by
``+/- jitter`` (a fraction) so that nodes which lost a peer at the same moment
do not all redial it at the same moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        initial: float,
        cap: float,
        jitter: float,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError("need 0 < initial <= cap")
        if not 0 <= jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.failures = 0
        self._uniform = uniform

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Delay before the next attempt; every call counts one more failure."""
        base = min(self.cap, self.initial * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return base * self._uniform(1.0 - self.jitter, 1.0 + self.jitter)
