"""The cluster's one LLM rate limiter: a named, detached Ray actor (`LIMITER_NAME` in namespace
`coin-scale`) holding a `coin_scale.llm.ratelimit.RateLimiter` per (provider, model, base URL),
and `RemoteLimiter`, the gateway's `Limiter` protocol over it. Every gateway actor of every sweep
on a cluster books its requests here, so concurrent sweeps share a provider's limits instead of
each assuming it has them all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import ray

from coin_scale.llm.ratelimit import RateLimiter, RateLimits

log = logging.getLogger(__name__)

LIMITER_NAME = "coin-scale-llm-rate-limiter"
NAMESPACE = "coin-scale"

Settle = tuple[int, int, float]
"""(estimated tokens, tokens used, booked start) of one answered request."""

FLUSH_S = 0.25
"""Longest a settlement waits for the gateway's next reservation to carry it."""


@ray.remote(num_cpus=0)
class RateLimiterActor:
    """One `RateLimiter` per key, on this actor's clock (callers only get relative waits)."""

    def __init__(self) -> None:
        self.limiters: dict[str, RateLimiter] = {}

    def _limiter(self, key: str, limits: RateLimits) -> RateLimiter:
        limiter = self.limiters.get(key)
        if limiter is None or limiter.limits != limits:
            if limiter is not None:
                log.warning("rate limits of %s changed to %s", key, limits)
            limiter = self.limiters[key] = RateLimiter(limits, now=time.monotonic())
        return limiter

    def reserve(
        self, key: str, limits: RateLimits, tokens: int, settles: Sequence[Settle] = ()
    ) -> tuple[float, float]:
        """Book one request, after applying `settles` (replies the caller had not reported)."""
        self.settle_many(key, settles)
        return self._limiter(key, limits).reserve(tokens, time.monotonic())

    def settle(self, key: str, estimated: int, actual: int, start: float) -> None:
        self.settle_many(key, ((estimated, actual, start),))

    def settle_many(self, key: str, settles: Sequence[Settle]) -> None:
        limiter = self.limiters.get(key)
        if limiter is not None:
            for estimated, actual, start in settles:
                limiter.settle(estimated, actual, start)

    def booked_tokens(self, key: str) -> float:
        """The tokens booked for `key` in its window (estimates until settled); 0 if unknown."""
        limiter = self.limiters.get(key)
        if limiter is None or limiter.tokens is None:
            return 0.0
        return float(sum(amount for _, amount in limiter.tokens.entries))

    def penalise(self, key: str, retry_after: float) -> None:
        if key in self.limiters:
            self.limiters[key].penalise(retry_after, time.monotonic())


def shared_rate_limiter() -> ray.actor.ActorHandle:
    """The cluster's limiter actor, created by the first caller (detached: it outlives one
    sweep, so the next sweep on the same cluster sees the minute's bookings)."""
    return RateLimiterActor.options(  # type: ignore[attr-defined]
        name=LIMITER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class RemoteLimiter:
    """The `Limiter` protocol over the named actor, for one key.

    A settlement (the tokens a reply really used) is not a call of its own: it rides on this
    gateway's next reservation, or leaves on its own after `flush_s` when no reservation comes.
    One actor call per request instead of two; until it arrives the limiter counts the request's
    estimate, which is never below what it used, so the delay errs on the safe side."""

    def __init__(
        self,
        handle: ray.actor.ActorHandle,
        key: str,
        limits: RateLimits,
        *,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.handle, self.key, self.limits = handle, key, limits
        self.flush_s = flush_s
        self._pending: list[Settle] = []
        self._timer: asyncio.TimerHandle | None = None

    async def reserve(self, tokens: int) -> tuple[float, float]:
        settles = self._take()
        return await self.handle.reserve.remote(self.key, self.limits, tokens, settles)

    async def settle(self, estimated: int, actual: int, start: float) -> None:
        self._pending.append((estimated, actual, start))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        """Send the pending settlements now (without waiting for the actor)."""
        settles = self._take()
        if settles:
            self.handle.settle_many.remote(self.key, settles)

    def _take(self) -> list[Settle]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        settles, self._pending = self._pending, []
        return settles

    async def penalise(self, retry_after: float) -> None:
        await self.handle.penalise.remote(self.key, retry_after)
