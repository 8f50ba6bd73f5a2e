"""Ray actors of the LLM gateway: a named rate limiter shared by the whole cluster, and async
actors that hold the provider clients (and their keys, in memory only) and call the core
`coin_scale.llm.gateway.Gateway`.

Every gateway actor of every sweep on a cluster books its requests with the one limiter actor
(`LIMITER_NAME` in namespace `coin-scale`), per (provider, model, base URL), so concurrent sweeps
share a provider's limits instead of each assuming it has them all.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import ray

from coin_scale.llm.cache import RequestCache
from coin_scale.llm.gateway import CallMeta, Gateway, GatewayConfig, GatewayFailed, GatewayReply
from coin_scale.llm.keys import KeyRedactor, redact
from coin_scale.llm.messages import ChatRequest
from coin_scale.llm.providers import make_client
from coin_scale.llm.ratelimit import RateLimiter, RateLimits
from coin_scale.storage.schemas import llm_calls

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


@dataclass(frozen=True, kw_only=True)
class GatewaySpec:
    """Everything a gateway actor needs except the key."""

    config: GatewayConfig
    limits: RateLimits
    base_url: str | None = None

    @property
    def limiter_key(self) -> str:
        return f"{self.config.provider}|{self.config.model}|{self.base_url or 'default'}"


@ray.remote(num_cpus=0, max_restarts=2)
class LLMGatewayActor:
    """Holds one provider client; `complete` runs concurrently (an asyncio actor)."""

    def __init__(self, spec: GatewaySpec, api_key: str) -> None:
        KeyRedactor([api_key]).install()
        self._secrets = [api_key]
        client = make_client(spec.config.provider, api_key=api_key, base_url=spec.base_url)
        limiter = RemoteLimiter(shared_rate_limiter(), spec.limiter_key, spec.limits)
        cache = RequestCache(spec.config.cache_dir) if spec.config.cache_dir else None
        self.gateway = Gateway(client, spec.config, limiter, cache)

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        try:
            return await self.gateway.complete(request, meta)
        except GatewayFailed as failed:
            failed.error.args = (redact(str(failed.error), self._secrets),)
            raise GatewayFailed(failed.error, failed.call) from None

    async def drain_ledger(self) -> list[llm_calls.Row]:
        return self.gateway.drain_ledger()


class GatewayPool:
    """`actors` gateway actors for one provider and model; calls go round-robin."""

    def __init__(self, spec: GatewaySpec, api_key: str, *, actors: int = 1) -> None:
        self.spec = spec
        self.actors = [
            LLMGatewayActor.remote(spec, api_key)  # type: ignore[attr-defined]
            for _ in range(max(1, actors))
        ]
        self._next = itertools.cycle(self.actors)

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """One request; raises `GatewayFailed` (its ledger row is kept by the actor)."""
        try:
            return await next(self._next).complete.remote(request, meta)
        except ray.exceptions.RayTaskError as err:
            cause = err.as_instanceof_cause()
            if isinstance(cause, GatewayFailed):
                raise GatewayFailed(cause.error, cause.call) from None
            raise

    def ledger(self) -> list[llm_calls.Row]:
        """Every ledger row the actors recorded since the last call."""
        return [row for rows in ray.get([a.drain_ledger.remote() for a in self.actors]) for row in rows]

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
