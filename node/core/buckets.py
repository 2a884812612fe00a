"""Token buckets, one per key (an origin, a peer, or just this node): ``burst`` tokens,
refilled at ``rate`` per unit of the clock the caller passes (seconds for the mesh,
milliseconds for the requester's core). Pure: the caller says what time it is."""

from __future__ import annotations


class TokenBuckets:
    """Past ``max_keys`` keys, the least recently used is forgotten (it comes back full)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        #: key -> (tokens left, when counted), least recently used first.
        self._buckets: dict[object, tuple[float, float]] = {}

    def tokens(self, key: object, now: float) -> float:
        left, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, left + (now - then) * self.rate)

    def has_token(self, key: object, now: float) -> bool:
        return self.tokens(key, now) >= 1

    def wait(self, key: object, now: float) -> float:
        """How long until ``key`` has a token (0: it has one now)."""
        return max(0.0, (1 - self.tokens(key, now)) / self.rate)

    def take(self, key: object, now: float) -> bool:
        """Take a token from ``key``'s bucket, if it has one."""
        left = self.tokens(key, now)
        allowed = left >= 1
        self._buckets.pop(key, None)
        self._buckets[key] = (left - 1 if allowed else left, now)
        if len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return allowed


def wait_ms(buckets: TokenBuckets, key: object, now_ms: int) -> int:
    """``TokenBuckets.wait`` on a millisecond clock, rounded up to a whole millisecond."""
    return int(-(-buckets.wait(key, now_ms) // 1))
