"""The cluster's one LLM rate limiter: a named, detached Ray actor (`LIMITER_NAME` in namespace
`coin-scale`) holding a `coin_scale.llm.ratelimit.RateLimiter` per (provider, model, base URL),
and `RemoteLimiter`, the gateway's `Limiter` protocol over it. Every gateway actor of every sweep
on a cluster books its requests here, so concurrent sweeps share a provider's limits instead of
each assuming it has them all."""

from __future__ import annotations

import logging
import time

import ray

from coin_scale.llm.ratelimit import RateLimiter, RateLimits

log = logging.getLogger(__name__)

LIMITER_NAME = "coin-scale-llm-rate-limiter"
NAMESPACE = "coin-scale"


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

    def reserve(self, key: str, limits: RateLimits, tokens: int) -> tuple[float, float]:
        return self._limiter(key, limits).reserve(tokens, time.monotonic())

    def settle(self, key: str, estimated: int, actual: int, start: float) -> None:
        if key in self.limiters:
            self.limiters[key].settle(estimated, actual, start)

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
    """The `Limiter` protocol over the named actor, for one key."""

    def __init__(self, handle: ray.actor.ActorHandle, key: str, limits: RateLimits) -> None:
        self.handle, self.key, self.limits = handle, key, limits

    async def reserve(self, tokens: int) -> tuple[float, float]:
        return await self.handle.reserve.remote(self.key, self.limits, tokens)

    async def settle(self, estimated: int, actual: int, start: float) -> None:
        await self.handle.settle.remote(self.key, estimated, actual, start)

    async def penalise(self, retry_after: float) -> None:
        await self.handle.penalise.remote(self.key, retry_after)
