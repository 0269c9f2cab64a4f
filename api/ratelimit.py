"""Per-API-key rate limiting: a token bucket per key id, in memory.

Each key may make ``burst`` requests at once; its bucket then refills at ``per_minute / 60``
tokens a second. The limit is per process: with several workers a key gets the rate of each.
Keys are the unit, not client addresses: idgraph never looks at client IPs (personal data), and
only authenticated keys reach the limiter, so the table holds at most one bucket per stored key.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from identity.errors import IdGraphError


class RateLimitedError(IdGraphError):
    """The API key made more requests than its rate allows (429, with ``Retry-After``)."""

    code = "rate-limited"

    def __init__(self, retry_after: int, limit: int = 0, window_s: int = 60) -> None:
        self.retry_after = retry_after
        self.limit = limit  # the bucket size (burst), for the RateLimit-* headers
        self.window_s = window_s
        super().__init__(
            "this API key is over its request rate (IDGRAPH_RATE_LIMIT_PER_MINUTE); "
            f"retry in {retry_after} s"
        )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key id. ``per_minute=0`` turns limiting off."""

    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self.per_minute = per_minute
        self.burst = burst
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        # Sync endpoints and dependencies run in a thread pool: buckets are shared across threads.
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.per_minute > 0

    def acquire(self, key_id: str) -> None:
        """Take one token from the key's bucket; raises :class:`RateLimitedError` if empty."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
            else:
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self._rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            missing = 1.0 - bucket.tokens
        raise RateLimitedError(max(1, math.ceil(missing / self._rate)), self.burst)
