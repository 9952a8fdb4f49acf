"""Rate limits: a token bucket per API key (per client address on an open server), shared by a process's threads."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from analytics_gql.api.auth import presented_key
from analytics_gql.settings import RateLimit

# Buckets kept at most; past it the least recently used go first (an open server sees unboundedly many addresses).
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by caller: each holds up to `rule.burst` tokens, refilled at `rule.per_second`; a request takes
    one. One lock guards them all, so every thread of the process shares the same buckets."""

    def __init__(self, rule: RateLimit, *, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rule = rule
        self._clock = clock  # monotonic: a wall-clock step back or forward must not drain or refill buckets
        self._max = max_buckets
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        # An idle bucket is full again after this long, the same as a new one: dropping it loses nothing.
        self._refill_s = rule.burst / rule.per_second

    def take(self, caller: str) -> int:
        """0 when `caller` may go on (a token was taken); otherwise the whole seconds (>= 1) until one is there."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(caller)
            if bucket is None:
                bucket = self._buckets[caller] = _Bucket(float(self.rule.burst), now)
            else:
                refilled = bucket.tokens + (now - bucket.updated) * self.rule.per_second
                bucket.tokens, bucket.updated = min(float(self.rule.burst), refilled), now
                self._buckets.move_to_end(caller)
            self._evict(now)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0
            return max(1, math.ceil((1 - bucket.tokens) / self.rule.per_second))

    def _evict(self, now: float) -> None:
        """Drop buckets idle long enough to be full, then the least recently used beyond the bound."""
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.updated < self._refill_s and len(self._buckets) <= self._max:
                return
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        """How many buckets are held."""
        with self._lock:
            return len(self._buckets)

    def describe(self) -> str:
        """The rule in the settings' syntax, e.g. `20/s, burst 40` or `30/min, burst 5`."""
        rate, burst = self.rule.per_second, self.rule.burst
        return f"{rate:g}/s, burst {burst}" if rate >= 1 else f"{rate * 60:g}/min, burst {burst}"


def caller_bucket(keyed: bool, headers: dict[bytes, bytes], client: tuple[str, int] | None) -> str:
    """The bucket name of an authenticated caller: its key when keys are configured, else its address."""
    if keyed:
        key = presented_key(headers) or ""
        # A digest, so the limiter's memory holds no key (a heap dump or a debugger shows none).
        return "key:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return "addr:" + (client[0] if client else "unknown")
