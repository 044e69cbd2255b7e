"""Recent throughput: completions per second over a sliding window.

A Director records every finished call (from Parsl's result thread) and
reports the rate in its status. Completions are counted in one-second
buckets, so recording is O(1) and memory is bounded by the window, however
many calls a batch holds.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

DEFAULT_WINDOW = 10.0
"""Seconds of history the rate is computed over."""


class RateMeter:
    """Events per second over the last ``window`` seconds.

    Args:
        window: Length of the sliding window in seconds (>= 1).
        clock: Monotonic clock in seconds (replaceable for tests).

    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not window >= 1:
            raise ValueError(f'window must be >= 1 second, got {window}')
        self.window = window
        self._clock = clock
        self._buckets: collections.deque[list[int]] = collections.deque()
        self._lock = threading.Lock()
        self._since = clock()

    def record(self, count: int = 1) -> None:
        """Count ``count`` events happening now."""
        second = int(self._clock())
        with self._lock:
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += count
            else:
                self._buckets.append([second, count])
                self._trim(second)

    def rate(self) -> float:
        """Events per second over the window (or since creation, if shorter)."""
        now = self._clock()
        with self._lock:
            self._trim(int(now))
            events = sum(count for _, count in self._buckets)
        # The buckets kept cover whole seconds since ``oldest`` up to now.
        span = min(now - self._oldest(int(now)), now - self._since)
        return events / span if span > 0 else 0.0

    def _oldest(self, second: int) -> int:
        return second - int(self.window) + 1

    def _trim(self, second: int) -> None:
        oldest = self._oldest(second)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
