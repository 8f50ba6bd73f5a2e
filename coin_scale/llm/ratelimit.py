"""Requests and tokens per minute, enforced as a provider counts them (pure: the clock is passed in).

Two rules hold together. A sliding window: no 60-second window ever holds more than the limit
(providers count per minute, and a bucket that starts full would let two minutes' worth through
in the first one). Pacing: requests are spaced `60 / rpm` seconds apart, with a small burst, so
the rate is even instead of a minute's worth at once followed by silence. The gateway holds one
`RateLimiter` per (provider, model) in a named Ray actor, so every worker shares one budget.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0
"""Length of the window the limits are counted over."""


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    """A provider's published limits for one model."""

    requests_per_minute: float
    """Requests allowed per minute (RPM); must be > 0."""
    tokens_per_minute: float | None = None
    """Input + output tokens allowed per minute (TPM); None when the provider sets none."""
    burst: int = 1
    """Requests that may start back to back before pacing spaces them (>= 1)."""
    margin_s: float = 0.5
    """Seconds added to the window, so a request sent a little late by the scheduler cannot put
    one too many into a minute as the server measures it."""

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {self.requests_per_minute}")
        if self.tokens_per_minute is not None and self.tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be > 0 or None, got {self.tokens_per_minute}")
        if self.burst < 1 or self.margin_s < 0:
            raise ValueError(
                f"burst must be >= 1 and margin_s >= 0, got {self.burst}, {self.margin_s}"
            )


class SlidingWindow:
    """Amounts reserved at given times; `earliest` finds when a new amount fits the window.

    The window's total is kept as entries come and go, so a reservation costs the entries it
    must look past, not every entry of the last minute."""

    def __init__(self, capacity: float, length: float) -> None:
        self.capacity = float(capacity)
        self.length = length
        self.entries: deque[list[float]] = deque()  # [start, amount], starts non-decreasing
        self.held = 0.0
        """The sum of the entries' amounts."""

    def _forget(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - self.length:
            self.held -= self.entries.popleft()[1]
        if not self.entries:
            self.held = 0.0  # no drift left behind by float sums

    def earliest(self, amount: float, at: float) -> float:
        """The earliest time >= `at` at which `amount` more keeps every window within capacity;
        an amount above capacity waits for an empty window (so it can still go through)."""
        self._forget(at)
        needed = min(amount, self.capacity)
        held = self.held
        start = max(at, self.entries[-1][0] if self.entries else at)
        for entry_start, entry_amount in self.entries:
            if held + needed <= self.capacity:
                break
            held -= entry_amount
            start = max(start, entry_start + self.length)
        return start

    def add(self, amount: float, start: float) -> None:
        self.entries.append([start, float(amount)])
        self.held += float(amount)

    def adjust_last(self, delta: float, start: float) -> None:
        """Correct the amount of the entry reserved at `start` (estimated vs real tokens)."""
        for entry in reversed(self.entries):
            if entry[0] == start:
                new = max(0.0, entry[1] + delta)
                self.held += new - entry[1]
                entry[1] = new
                return


class RateLimiter:
    """Requests and tokens per minute together: `reserve` says how long to wait, then books it."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        window = WINDOW_S + limits.margin_s
        self.requests = SlidingWindow(limits.requests_per_minute, window)
        self.tokens = (
            SlidingWindow(limits.tokens_per_minute, window) if limits.tokens_per_minute else None
        )
        self.interval = WINDOW_S / limits.requests_per_minute
        self._tat = now  # theoretical arrival time of the next request (GCRA pacing)
        self._not_before = now

    def reserve(self, tokens: int, now: float) -> tuple[float, float]:
        """Book one request of about `tokens` tokens; returns (seconds to wait before sending it,
        its booked start, to pass to `settle`). Bookings are taken at once, so concurrent callers
        queue up in order."""
        start = max(now, self._not_before, self._tat - (self.limits.burst - 1) * self.interval)
        for _ in range(8):  # the two windows can push each other; converges in a step or two
            moved = self.requests.earliest(1, start)
            if self.tokens is not None:
                moved = self.tokens.earliest(tokens, moved)
            if moved == start:
                break
            start = moved
        self.requests.add(1, start)
        if self.tokens is not None:
            self.tokens.add(tokens, start)
        self._tat = max(self._tat, start) + self.interval
        return start - now, start

    def settle(self, estimated: int, actual: int, start: float) -> None:
        """Correct the booked tokens once the reply says how many were really used."""
        if self.tokens is not None:
            self.tokens.adjust_last(actual - estimated, start)

    def penalise(self, retry_after: float, now: float) -> None:
        """A 429 with Retry-After: nothing is sent before then."""
        self._not_before = max(self._not_before, now + retry_after)
