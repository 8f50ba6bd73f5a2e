"""The gateway core: one provider client behind the cache, the rate limiter and retries, with a
ledger row for every request. Pure asyncio; the gateway actors (`actors/llm_gateway.py`) hold
it in Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from coin_scale.llm.cache import RequestCache, canonical_json, key_of_json
from coin_scale.llm.messages import ChatRequest, ChatResponse, ProviderError
from coin_scale.llm.providers import CallOptions, ChatClient
from coin_scale.llm.ratelimit import RateLimiter, RateLimits
from coin_scale.llm.retry import RetryPolicy, call_with_retries
from coin_scale.llm.settings import Price, RequestOverrides
from coin_scale.storage.schemas import llm_calls


class Limiter(Protocol):
    """A rate limiter the gateway awaits: local (`LocalLimiter`) or the cluster's named actor."""

    async def reserve(self, tokens: int) -> tuple[float, float]:
        """(seconds to wait, booking start) for one request of about `tokens` tokens."""
        ...

    async def settle(self, estimated: int, actual: int, start: float) -> None: ...

    async def penalise(self, retry_after: float) -> None: ...


class LocalLimiter:
    """A `RateLimiter` for this process only, on the monotonic clock (or the one given)."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limiter = RateLimiter(limits, now=clock())

    async def reserve(self, tokens: int) -> tuple[float, float]:
        return self.limiter.reserve(tokens, self.clock())

    async def settle(self, estimated: int, actual: int, start: float) -> None:
        self.limiter.settle(estimated, actual, start)

    async def penalise(self, retry_after: float) -> None:
        self.limiter.penalise(retry_after, self.clock())


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """One provider and model, and how calls to it behave."""

    provider: str
    model: str
    timeout_s: float = 120.0
    """Timeout of each attempt."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    price: Price | None = None
    """None: the model is not in the price table; its calls are recorded at $0."""
    cache_dir: str | None = None
    """Request cache directory (None: no cache)."""
    overrides: RequestOverrides = ()
    """The model's request parameters from configs/llm.yaml (`request_overrides`)."""
    prompt_caching: bool = True
    """Mark the requests' unchanging prefix for the provider's prompt cache."""

    @property
    def options(self) -> CallOptions:
        return CallOptions(overrides=self.overrides, prompt_caching=self.prompt_caching)


@dataclass(frozen=True, kw_only=True)
class CallMeta:
    """What a call is for, for the ledger."""

    run_id: str
    layer: str | None = None
    unit: int | None = None
    round: int | None = None


@dataclass(frozen=True, kw_only=True)
class GatewayReply:
    response: ChatResponse
    cost_usd: float
    cached: bool
    call: llm_calls.Row


class GatewayFailed(Exception):
    """A request failed for good (after its retries); the ledger row says how."""

    def __init__(self, error: ProviderError, call: llm_calls.Row) -> None:
        super().__init__(f"{error} (after {call.retries} retries)")
        self.error = error
        self.call = call

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (GatewayFailed, (self.error, self.call))


class Gateway:
    """Cache -> rate limiter -> client, retried; every request leaves an `llm_calls` row."""

    def __init__(
        self,
        client: ChatClient,
        config: GatewayConfig,
        limiter: Limiter,
        cache: RequestCache | None = None,
        *,
        sleep=asyncio.sleep,  # type: ignore[no-untyped-def]
    ) -> None:
        self.client = client
        self.config = config
        self.limiter = limiter
        self.cache = cache
        self.ledger: list[llm_calls.Row] = []
        self._sleep = sleep

    def drain_ledger(self) -> list[llm_calls.Row]:
        """The rows recorded since the last drain."""
        rows, self.ledger = self.ledger, []
        return rows

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """The reply (from the cache when this exact request was answered before); raises
        `GatewayFailed` when every attempt failed or the error is not retryable."""
        cfg = self.config
        request_json = canonical_json(request.canonical())  # for the key and the estimate
        key = key_of_json(cfg.provider, cfg.model, request_json)
        started_at, t0 = datetime.now(UTC), time.perf_counter()
        waited = 0.0

        attempts = 0

        def row(status: str, **outcome) -> llm_calls.Row:  # type: ignore[no-untyped-def]
            blank = llm_calls.Row(
                run_id=meta.run_id, call_id=uuid.uuid4().hex[:16], provider=cfg.provider,
                model=cfg.model, layer=meta.layer, unit=meta.unit, round=meta.round,
                status=status, error_kind=None, http_status=None, input_tokens=0,
                output_tokens=0, cached_input_tokens=0, cache_write_tokens=0, cost_usd=0.0, latency_ms=(time.perf_counter() - t0) * 1000,
                wait_ms=waited * 1000, retries=max(0, attempts - 1), cache_key=key,
                started_at=started_at,
            )  # fmt: skip
            return dataclasses.replace(blank, **outcome)

        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            call = row("cached")
            self.ledger.append(call)
            return GatewayReply(
                response=ChatResponse.from_dict(hit), cost_usd=0.0, cached=True, call=call
            )

        estimate = request.estimate_input_tokens(request_json) + request.max_tokens

        async def attempt() -> ChatResponse:
            nonlocal waited, attempts
            attempts += 1
            wait, start = await self.limiter.reserve(estimate)
            if wait > 0:
                waited += wait
                await self._sleep(wait)
            try:
                response = await self.client.complete(
                    request, model=cfg.model, timeout=cfg.timeout_s, options=cfg.options
                )
            except ProviderError:
                await self.limiter.settle(estimate, 0, start)
                raise
            await self.limiter.settle(estimate, response.usage.total, start)
            return response

        async def on_retry(err: ProviderError, _wait: float) -> None:
            if err.kind == "rate_limit" and err.retry_after:
                await self.limiter.penalise(err.retry_after)

        try:
            response, _ = await call_with_retries(
                attempt, cfg.retry, on_retry=on_retry, sleep=self._sleep
            )
        except ProviderError as err:
            call = row("failed", error_kind=err.kind, http_status=err.status)
            self.ledger.append(call)
            raise GatewayFailed(err, call) from None
        usage = response.usage
        cost = cfg.price.cost_of(usage) if cfg.price else 0.0
        call = row(
            "ok", input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens, cost_usd=cost,
        )  # fmt: skip
        if self.cache is not None:
            self.cache.put(key, response.to_dict())
        self.ledger.append(call)
        return GatewayReply(response=response, cost_usd=cost, cached=False, call=call)
