"""Ray actors of the LLM gateway: a named rate limiter shared by the whole cluster, and async
actors that hold the provider clients (and their keys, in memory only) and call the core
`coin_scale.llm.gateway.Gateway`.

Every gateway actor of every sweep on a cluster books its requests with the one limiter actor
(`LIMITER_NAME` in namespace `coin-scale`), per (provider, model, base URL), so concurrent sweeps
share a provider's limits instead of each assuming it has them all.

`GatewayPool` survives the death of a gateway actor: Ray restarts it (`max_restarts`), the calls
it had in flight are resubmitted to a live actor (bounded attempts, the dead one rests for a
doubling backoff), and the ledger is kept on the driver from the replies, so the rows of the
calls a dead actor answered are not lost with it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

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


@ray.remote(num_cpus=0, max_restarts=4, max_task_retries=0)  # type: ignore[call-overload]
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

    async def pid(self) -> int:
        """This actor's process id (to find, or kill, it)."""
        return os.getpid()


class GatewayPool:
    """`actors` gateway actors for one provider and model; each call goes to the least loaded
    live actor, and a call whose actor died is resubmitted to another (up to `max_attempts`)."""

    def __init__(
        self,
        spec: GatewaySpec,
        api_key: str,
        *,
        actors: int = 1,
        max_attempts: int = 6,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`actor_options`: Ray options of the actors (e.g. `resources` to place them)."""
        from coin_scale.actors.pool import SlotHealth  # driver side only (pool imports torch)

        if max_attempts < 1:
            raise ValueError(f"max_attempts: expected >= 1; got {max_attempts!r}")
        self.spec = spec
        options = dict(actor_options or {})
        self.actors = [
            LLMGatewayActor.options(**options).remote(spec, api_key)  # type: ignore[attr-defined]
            for _ in range(max(1, actors))
        ]
        self.max_attempts = max_attempts
        self.resubmitted = 0
        """Calls sent again because their actor died (each may have been paid once already)."""
        self._health = SlotHealth(len(self.actors))
        self._load = [0] * len(self.actors)
        self._turn = itertools.count()
        self._rows: list[llm_calls.Row] = []

    async def _slot(self) -> int:
        """A live actor (waiting out the backoff when every actor is resting)."""
        while not (ready := self._health.ready_slots()):
            await asyncio.sleep(self._health.wait_s())
        turn = next(self._turn)
        return min(ready, key=lambda i: (self._load[i], (turn + i) % len(self._load)))

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """One request; raises `GatewayFailed` (its ledger row is kept), or `RuntimeError` when
        the call was lost with an actor `max_attempts` times."""
        for attempt in range(1, self.max_attempts + 1):
            slot = await self._slot()
            self._load[slot] += 1
            try:
                reply: GatewayReply = await self.actors[slot].complete.remote(request, meta)
            except (RayActorError, ActorUnavailableError) as err:
                if attempt >= self.max_attempts:
                    raise RuntimeError(
                        f"LLM call of unit {meta.unit} round {meta.round} was lost with a gateway "
                        f"actor {attempt} times (last: {type(err).__name__})"
                    ) from None
                self.resubmitted += 1
                delay = self._health.failed(slot)
                log.warning(
                    "gateway actor %d lost a call of unit %s (%s); resubmitting, that actor "
                    "rested %.1f s", slot, meta.unit, type(err).__name__, delay,
                )  # fmt: skip
                continue
            except RayTaskError as err:
                cause = err.as_instanceof_cause()
                if isinstance(cause, GatewayFailed):
                    self._rows.append(cause.call)
                    raise GatewayFailed(cause.error, cause.call) from None
                raise
            finally:
                self._load[slot] -= 1
            self._health.succeeded(slot)
            self._rows.append(reply.call)
            return reply
        raise AssertionError("unreachable: max_attempts >= 1")

    def ledger(self) -> list[llm_calls.Row]:
        """Every ledger row of the calls answered since the last call (kept on the driver from
        the replies; the actors' own copies are drained so they do not grow)."""
        rows, self._rows = self._rows, []
        for actor in self.actors:
            try:
                ray.get(actor.drain_ledger.remote(), timeout=30)
            except (RayActorError, GetTimeoutError) as err:  # dead for good: nothing to free
                log.debug("gateway ledger drain: %s", err)
        return rows

    def pids(self) -> list[int]:
        """Each actor's process id, in order."""
        return list(ray.get([actor.pid.remote() for actor in self.actors]))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
