"""Token buckets for requests and tokens per minute (pure: the clock is passed in).

The gateway will hold one `RateLimiter` per (provider, model) in a named Ray actor so that every
worker of a cluster shares the same budget; this module only does the arithmetic."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    """A provider's published limits for one model."""

    requests_per_minute: float
    """Requests allowed per minute (RPM); must be > 0."""
    tokens_per_minute: float | None = None
    """Input + output tokens allowed per minute (TPM); None when the provider sets none."""

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {self.requests_per_minute}")
        if self.tokens_per_minute is not None and self.tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be > 0 or None, got {self.tokens_per_minute}")


class TokenBucket:
    """Capacity `rate_per_minute` (one minute's worth of burst), refilled continuously."""

    def __init__(self, rate_per_minute: float, now: float) -> None:
        self.capacity = float(rate_per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be taken (0 if now); an amount above capacity waits for a
        full bucket, so one oversized request can still go through."""
        self._refill(now)
        ahead = max(0.0, self.updated - now)  # reservations already queued into the future
        needed = min(amount, self.capacity)
        return ahead + (0.0 if self.level >= needed else (needed - self.level) / self.rate)

    def take(self, amount: float, now: float) -> None:
        """Take `amount` (the level may go negative for an oversized request: later ones wait)."""
        self._refill(now)
        self.level -= amount


class RateLimiter:
    """Requests and tokens per minute together: `reserve` says how long to wait, then takes both."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.requests = TokenBucket(limits.requests_per_minute, now)
        self.tokens = (
            TokenBucket(limits.tokens_per_minute, now) if limits.tokens_per_minute else None
        )

    def reserve(self, tokens: int, now: float) -> float:
        """Reserve one request of about `tokens` tokens; returns the seconds to wait before
        sending it. Reservations are taken at once, so concurrent callers queue up fairly."""
        wait = self.requests.wait_time(1, now)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_time(tokens, now))
        start = now + wait
        self.requests.take(1, start)
        if self.tokens is not None:
            self.tokens.take(tokens, start)
        return wait

    def settle(self, estimated: int, actual: int, now: float) -> None:
        """Correct the token bucket once the reply says how many tokens were really used."""
        if self.tokens is not None:
            self.tokens.take(actual - estimated, now)

    def penalise(self, retry_after: float, now: float) -> None:
        """A 429 with Retry-After: empty the request bucket so nothing is sent before then."""
        self.requests._refill(now)
        self.requests.level = min(self.requests.level, -retry_after * self.requests.rate)
