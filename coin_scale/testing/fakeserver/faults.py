"""Which fault a fake provider server injects into each request, and how late it answers.

Deterministic: request `n` draws from its own RNG seeded with `(seed, n)`, so the same requests
get the same faults whatever order the server's threads run in.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

FaultName = Literal["rate_limit", "server_error", "malformed", "spend_limit", "rpm_limit"]
FAULT_NAMES: tuple[str, ...] = ("rate_limit", "server_error", "malformed", "spend_limit")
"""Faults a `script` may name (`rpm_limit` is the server's own limit, never scripted)."""

WINDOW_S = 60.0
"""The window `rpm_limit` counts requests over."""


@dataclass(frozen=True, kw_only=True)
class Faults:
    """What goes wrong, and how often. All probabilities are per request; the default is none."""

    latency_s: float = 0.0
    """Seconds before every answer (errors included)."""
    jitter_s: float = 0.0
    """Up to this many seconds more, uniformly drawn per request."""
    p_rate_limit: float = 0.0
    """Probability of a 429 with `retry-after` / `retry-after-ms` headers."""
    retry_after_s: float = 1.0
    """What those headers say."""
    p_server_error: float = 0.0
    """Probability of a 5xx."""
    server_error_status: int = 500
    """The status of a server error (529 is Anthropic's `overloaded_error`)."""
    p_malformed: float = 0.0
    """Probability of a 200 whose body is not valid JSON."""
    script: tuple[str | None, ...] = ()
    """Faults of the first requests, in order (None: no fault); the probabilities apply after."""
    spend_limit: bool = False
    """Answer every request with the API's quota-exhausted 429."""
    rpm_limit: int | None = None
    """Answer 429 when more than this many requests arrived in the last 60 s (this one counted)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("p_rate_limit", "p_server_error", "p_malformed"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if self.latency_s < 0 or self.jitter_s < 0 or self.retry_after_s < 0:
            raise ValueError("latency_s, jitter_s and retry_after_s must be >= 0")
        if self.rpm_limit is not None and self.rpm_limit < 1:
            raise ValueError(f"rpm_limit must be >= 1 or None, got {self.rpm_limit}")
        unknown = [f for f in self.script if f is not None and f not in FAULT_NAMES]
        if unknown:
            raise ValueError(f"unknown faults in script: {unknown}; known: {FAULT_NAMES}")


@dataclass(frozen=True)
class Decision:
    """What to do with one request: which fault (None: answer normally), after how long, and
    the seconds a 429 asks to wait (for `rpm_limit`: until a request would fit the window)."""

    fault: str | None
    delay_s: float
    retry_after_s: float


class FaultInjector:
    """Thread-safe: numbers the requests as they arrive and decides each one's fault."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._lock = threading.Lock()
        self._count = 0
        self._arrivals: deque[float] = deque()

    def decide(self, arrived_at: float) -> Decision:
        """The decision for a request that arrived at `arrived_at` (time.monotonic)."""
        f = self.faults
        with self._lock:
            index = self._count
            self._count += 1
            self._arrivals.append(arrived_at)
            while self._arrivals and self._arrivals[0] <= arrived_at - WINDOW_S:
                self._arrivals.popleft()
            in_window = len(self._arrivals)
            limit = f.rpm_limit
            # A request at T fits when at most limit - 1 of these are in (T - 60, T]: the
            # (in_window - limit)-th arrival must have left the window.
            frees_at = (
                self._arrivals[in_window - limit] + WINDOW_S
                if limit is not None and in_window > limit
                else arrived_at
            )
        rng = random.Random(f"{f.seed}:{index}")
        delay = f.latency_s + (rng.random() * f.jitter_s if f.jitter_s else 0.0)
        retry_after = f.retry_after_s
        fault: str | None
        if f.spend_limit:
            fault = "spend_limit"
        elif f.rpm_limit is not None and in_window > f.rpm_limit:
            fault = "rpm_limit"
            retry_after = max(0.0, frees_at - arrived_at)
        elif index < len(f.script):
            fault = f.script[index]
        else:
            draw = rng.random()
            fault = None
            for name, p in (
                ("rate_limit", f.p_rate_limit),
                ("server_error", f.p_server_error),
                ("malformed", f.p_malformed),
            ):
                if draw < p:
                    fault = name
                    break
                draw -= p
        return Decision(fault=fault, delay_s=delay, retry_after_s=retry_after)
