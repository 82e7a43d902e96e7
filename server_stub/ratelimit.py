"""Per-user connect rate limit: one token bucket per ``sub``."""

from __future__ import annotations

import time

from .config import RateLimit


class ConnectLimiter:
    def __init__(self, limit: RateLimit, clock=time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  #: sub -> (tokens, at)

    def take(self, sub: str) -> int:
        """Spend one token for ``sub``; returns 0 when allowed, else ms until one is available."""
        if not self._limit.enabled:
            return 0
        now = self._clock()
        rate, burst = self._limit.per_second, self._limit.burst
        tokens, at = self._buckets.get(sub, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens >= 1:
            self._buckets[sub] = (tokens - 1, now)
            return 0
        self._buckets[sub] = (tokens, now)
        return max(1, int((1 - tokens) / rate * 1000) + 1)

    def prune(self) -> None:
        """Forget buckets that have refilled: they hold nothing a fresh bucket would not."""
        now = self._clock()
        rate, burst = self._limit.per_second, self._limit.burst
        full = [sub for sub, (tokens, at) in self._buckets.items() if tokens + (now - at) * rate >= burst]
        for sub in full:
            del self._buckets[sub]

    def __len__(self) -> int:
        return len(self._buckets)
