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
        return self.reserve_many(key, limits, (tokens,), settles)[0]

    def reserve_many(
        self, key: str, limits: RateLimits, tokens: Sequence[int], settles: Sequence[Settle] = ()
    ) -> list[tuple[float, float]]:
        """Book several requests in the order given (one caller's reservations that queued up
        while its previous call was on its way), after applying `settles`."""
        self.settle_many(key, settles)
        limiter = self._limiter(key, limits)
        now = time.monotonic()
        return [limiter.reserve(t, now) for t in tokens]

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
        return limiter.tokens.held

    def penalise(self, key: str, retry_after: float) -> None:
        if key in self.limiters:
            self.limiters[key].penalise(retry_after, time.monotonic())


def _fail(
    waiting: Sequence[tuple[int, asyncio.Future[tuple[float, float]]]], err: Exception | None
) -> None:
    """Raise `err` in (or, for None, cancel) the reservations still waiting."""
    for _, future in waiting:
        if not future.done():
            if err is None:
                future.cancel()
            else:
                future.set_exception(err)


def shared_rate_limiter() -> ray.actor.ActorHandle:
    """The cluster's limiter actor, created by the first caller (detached: it outlives one
    sweep, so the next sweep on the same cluster sees the minute's bookings)."""
    return RateLimiterActor.options(  # type: ignore[attr-defined]
        name=LIMITER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class RemoteLimiter:
    """The `Limiter` protocol over the named actor, for one key.

    Reservations made while one call to the actor is on its way wait for it and then go
    together, in their order, as one call (`reserve_many`): the first adds no wait, and a gateway
    with many requests in flight makes a few actor calls instead of one per request.

    A settlement (the tokens a reply really used) is not a call of its own: it rides on this
    gateway's next reservation, or leaves on its own after `flush_s` when no reservation comes.
    Until it arrives the limiter counts the request's estimate, which is never below what it
    used, so the delay errs on the safe side."""

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
        self._queue: list[tuple[int, asyncio.Future[tuple[float, float]]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.actor_calls = 0
        """Calls made to the actor for reservations (fewer than the reservations under load)."""

    async def reserve(self, tokens: int) -> tuple[float, float]:
        future: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        self._queue.append((tokens, future))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send())
        return await future

    async def _send(self) -> None:
        """Send the queued reservations, a batch per call, until none is left. A task of its own,
        so one caller's cancellation cannot cancel the others' batch."""
        batch: list[tuple[int, asyncio.Future[tuple[float, float]]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                self.actor_calls += 1
                try:
                    booked = await self.handle.reserve_many.remote(
                        self.key, self.limits, [tokens for tokens, _ in batch], self._take()
                    )
                except Exception as err:  # noqa: BLE001 - every waiting caller gets it
                    _fail(batch, err)
                    continue
                for (_, future), (wait, start) in zip(batch, booked, strict=True):
                    if not future.done():
                        future.set_result((wait, start))
        except BaseException:  # cancelled with the loop: no caller is left waiting forever
            _fail(batch + self._queue, None)
            self._queue = []
            raise
        finally:
            self._sender = None

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
