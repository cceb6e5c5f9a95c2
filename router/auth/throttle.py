"""Failed authentication attempts: counted per address, and slowed down when they repeat.

Per replica and in memory on purpose: a guesser spread over replicas is
slowed on each, and no Redis round trip is spent on a request we refuse.
Up to ``threshold`` failures per minute from one address cost nothing extra
(a mistyped key should not hurt); each failure beyond that waits twice as
long as the one before, from 100 ms up to 5 s, before its 401.  The wait is
an ``asyncio.sleep``: it holds the guesser's connection, not the loop.
"""

from __future__ import annotations

import time

WINDOW = 60.0
BASE_DELAY = 0.1
MAX_DELAY = 5.0
MAX_ADDRESSES = 100_000


class FailureThrottle:
    def __init__(self) -> None:
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window start, count)
        self.total = 0  # every failed attempt since start; exported as a metric
        self.slowed = 0  # failures that were made to wait

    def failures(self, address: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        start, count = self._failures.get(address, (now, 0))
        return count if now - start < WINDOW else 0

    def record_failure(self, address: str, threshold: int, now: float | None = None) -> float:
        """Count one failure; return how long to wait before answering it."""
        now = time.monotonic() if now is None else now
        self.total += 1
        start, count = self._failures.get(address, (now, 0))
        if now - start >= WINDOW:
            start, count = now, 0
        count += 1
        if len(self._failures) >= MAX_ADDRESSES and address not in self._failures:
            self._failures.clear()
        self._failures[address] = (start, count)
        excess = count - threshold
        if excess <= 0:
            return 0.0
        self.slowed += 1
        return min(MAX_DELAY, BASE_DELAY * 2 ** min(excess - 1, 16))
