"""The AWS call budget of a job's polling: at most 12 calls in any minute, previews included."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

AWS_CALLS_PER_MINUTE = 12


class CallBudget:
    """At most ``limit`` calls in any ``window`` seconds: tells a poller how long to wait before its next calls."""

    def __init__(
        self, limit: int = AWS_CALLS_PER_MINUTE, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._calls: collections.deque[float] = collections.deque()
        self.log: list[float] = []
        """Every call's time, for measurements (the benchmark's calls a minute)."""

    def _trim(self, now: float) -> None:
        while self._calls and self._calls[0] <= now - self.window:
            self._calls.popleft()

    def spend(self, count: int) -> None:
        now = self.clock()
        for _ in range(max(0, count)):
            self._calls.append(now)
            self.log.append(now)

    def room(self) -> int:
        self._trim(self.clock())
        return self.limit - len(self._calls)

    def delay(self, count: int) -> float:
        """Seconds until ``count`` more calls fit in the window."""
        now = self.clock()
        self._trim(now)
        excess = len(self._calls) + count - self.limit
        if excess <= 0:
            return 0.0
        return max(0.0, self._calls[excess - 1] + self.window - now)


def max_calls_per_window(times: list[float], window: float = 60.0) -> int:
    """The most calls in any ``window`` seconds of ``times`` (sorted)."""
    best = 0
    start = 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best
