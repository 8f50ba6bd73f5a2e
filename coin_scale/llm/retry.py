"""Retries of provider calls: tenacity with full-jitter exponential backoff that never waits less
than the server's Retry-After. Only `ProviderError`s of a retryable kind are retried (429 rate
limits, 5xx, timeouts, connection errors, malformed bodies); 400, 401, 403 and spend-limit 429s
fail at once. The SDKs' own retries are off, so the two never stack."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from coin_scale.llm.messages import ProviderError

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry one request."""

    max_attempts: int = 6
    """Attempts in all, the first included."""
    initial_wait_s: float = 1.0
    """Scale of the exponential backoff (full jitter: a uniform draw up to initial * 2**n)."""
    max_wait_s: float = 60.0
    """Ceiling of the backoff draw (a longer Retry-After is still honoured)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_wait_s < 0 or self.max_wait_s < 0:
            raise ValueError(
                "max_attempts must be >= 1 and waits >= 0, got "
                f"{self.max_attempts}, {self.initial_wait_s}, {self.max_wait_s}"
            )


def _retryable(err: BaseException) -> bool:
    return isinstance(err, ProviderError) and err.retryable


class _BackoffHonouringRetryAfter(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.backoff = tenacity.wait_random_exponential(
            multiplier=policy.initial_wait_s, max=policy.max_wait_s
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.backoff(retry_state)
        err = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(err, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[ProviderError, float], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """Run `attempt` until it succeeds or fails for good; returns (its result, retries made).
    `on_retry(error, wait)` runs before each backoff sleep (the gateway tells the rate limiter
    about a Retry-After there). The last error is re-raised as it was."""
    retries = 0

    async def before_sleep(state: tenacity.RetryCallState) -> None:
        nonlocal retries
        retries += 1
        err = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(err, ProviderError):
            await on_retry(err, state.upcoming_sleep)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=_BackoffHonouringRetryAfter(policy),
        retry=tenacity.retry_if_exception(_retryable),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    result: T = await retrying(attempt)
    return result, retries
