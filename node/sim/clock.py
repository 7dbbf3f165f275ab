"""Simulated time: a heap of timed actions, run in order (no real clock anywhere).

Theory of operation
-------------------
``Scheduler.at(t, action, *args)`` queues a call for simulated time ``t``;
``run()`` pops the earliest, sets ``now`` to its time and calls it (it may
queue more). Actions due at the same time run in the order they were queued
(a counter breaks ties), so a run depends only on what was queued: the same
inputs give the same sequence of calls, whatever the machine.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

Action = Callable[..., None]


class Scheduler:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Action, tuple[Any, ...]]] = []
        self._tick = itertools.count()
        self.steps = 0  # actions run so far (a measure of the simulation's own work)

    def at(self, when: float, action: Action, *args: Any) -> None:
        """Run ``action(*args)`` at simulated time ``when`` (not before ``now``)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when} s, before now ({self.now} s)")
        heapq.heappush(self._heap, (when, next(self._tick), action, args))

    def after(self, delay: float, action: Action, *args: Any) -> None:
        self.at(self.now + delay, action, *args)

    @property
    def idle(self) -> bool:
        return not self._heap

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, until: float | None = None) -> None:
        """Run actions in time order until none are left (or the next is after ``until``)."""
        while self._heap and (until is None or self._heap[0][0] <= until):
            when, _, action, args = heapq.heappop(self._heap)
            self.now = when
            self.steps += 1
            action(*args)
        if until is not None and until > self.now:
            self.now = until
