"""The gateway core: cache, rate limiter, retries that honour Retry-After, and the ledger.

The client here is an in-process stand-in with scripted outcomes (the real SDKs against real HTTP
servers are covered in test_llm_providers.py and test_llm_explainer.py); sleeps are recorded,
not slept."""

from __future__ import annotations

import asyncio

import pytest

from coin_scale.llm.cache import RequestCache
from coin_scale.llm.gateway import CallMeta, Gateway, GatewayConfig, GatewayFailed, LocalLimiter
from coin_scale.llm.messages import ChatRequest, ChatResponse, Message, ProviderError, Usage
from coin_scale.llm.ratelimit import RateLimits
from coin_scale.llm.retry import RetryPolicy
from coin_scale.llm.settings import Price, load_settings

REQUEST = ChatRequest(system="You explain units.", messages=(Message(role="user", text="unit 7"),))
META = CallMeta(run_id="r1", layer="layer4", unit=7, round=0)


class ScriptedClient:
    """Fails with the scripted errors first, then answers."""

    provider = "openai"

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def complete(
        self, request: ChatRequest, *, model: str, timeout: float, options: object = None
    ) -> ChatResponse:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ChatResponse(text="red things", usage=Usage(input_tokens=1000, output_tokens=100))


def _gateway(client, tmp_path=None, sleeps=None, **retry) -> Gateway:  # type: ignore[no-untyped-def]
    clock = [0.0]

    async def sleep(s: float) -> None:
        clock[0] += s
        if sleeps is not None:
            sleeps.append(s)

    config = GatewayConfig(
        provider="openai", model="gpt-4.1-mini",
        price=Price(input_per_million=0.4, output_per_million=1.6),
        retry=RetryPolicy(**({"max_attempts": 4, "initial_wait_s": 0.5} | retry)),
    )  # fmt: skip
    cache = RequestCache(tmp_path) if tmp_path else None
    limiter = LocalLimiter(RateLimits(requests_per_minute=6000), clock=lambda: clock[0])
    return Gateway(client, config, limiter, cache, sleep=sleep)


def _rate_limited(after: float) -> ProviderError:
    return ProviderError("rate_limit", "slow down", provider="openai", status=429, retry_after=after)


def test_a_call_is_priced_and_recorded():
    gw = _gateway(ScriptedClient())
    reply = asyncio.run(gw.complete(REQUEST, META))
    assert reply.response.text == "red things" and not reply.cached
    assert reply.cost_usd == pytest.approx((1000 * 0.4 + 100 * 1.6) / 1e6)
    (row,) = gw.drain_ledger()
    assert (row.status, row.unit, row.round, row.retries) == ("ok", 7, 0, 0)
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (1000, 100, reply.cost_usd)
    assert gw.drain_ledger() == []


def test_retry_after_is_honoured_and_retries_are_counted():
    sleeps: list[float] = []
    client = ScriptedClient(_rate_limited(7.0), ProviderError("server", "boom", provider="openai", status=500))
    gw = _gateway(client, sleeps=sleeps)
    reply = asyncio.run(gw.complete(REQUEST, META))
    assert reply.response.text == "red things" and client.calls == 3
    assert sleeps[0] >= 7.0  # never less than Retry-After (the limiter also holds the others)
    # The 500: a jittered backoff in [0, 1] s; when the jitter comes out under the limiter's
    # 0.01 s spacing (6000 rpm), the limiter sleeps the rest of it (a ~1% case).
    assert 0.0 <= sleeps[1] <= 0.5 * 2**1
    assert len(sleeps) == 2 or (len(sleeps) == 3 and sleeps[1] + sleeps[2] == pytest.approx(0.01))
    assert gw.drain_ledger()[0].retries == 2


@pytest.mark.parametrize("kind,status", [("auth", 401), ("bad_request", 400), ("spend_limit", 429)])
def test_errors_that_retrying_cannot_fix_fail_at_once(kind, status):
    client = ScriptedClient(ProviderError(kind, "no", provider="openai", status=status))
    gw = _gateway(client)
    with pytest.raises(GatewayFailed) as failed:
        asyncio.run(gw.complete(REQUEST, META))
    assert client.calls == 1 and failed.value.error.kind == kind
    (row,) = gw.drain_ledger()
    assert (row.status, row.error_kind, row.http_status, row.retries) == ("failed", kind, status, 0)


def test_retries_stop_after_max_attempts():
    client = ScriptedClient(*[ProviderError("server", "down", provider="openai", status=503)] * 10)
    gw = _gateway(client, max_attempts=3)
    with pytest.raises(GatewayFailed, match="after 2 retries"):
        asyncio.run(gw.complete(REQUEST, META))
    assert client.calls == 3


def test_a_resumed_run_is_answered_from_the_cache_and_pays_nothing(tmp_path):
    first = _gateway(ScriptedClient(), tmp_path)
    asyncio.run(first.complete(REQUEST, META))
    client = ScriptedClient()
    again = _gateway(client, tmp_path)
    reply = asyncio.run(again.complete(REQUEST, META))
    assert client.calls == 0 and reply.cached and reply.cost_usd == 0.0
    assert reply.response.text == "red things"
    assert again.drain_ledger()[0].status == "cached"


def test_shipped_settings_have_every_default_model_priced():
    settings = load_settings()
    assert set(settings.providers) == {"openai", "anthropic", "gemini"}
    for provider in settings.providers.values():
        assert settings.price(provider.default_model) is not None
    assert settings.price("gpt-4o-2024-08-06") == settings.price("gpt-4o")
    assert settings.price("no-such-model") is None
