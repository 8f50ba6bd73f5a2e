"""Cheaper requests: the providers' prompt caches (marked as each documents it, read back from
each SDK's usage into the ledger and priced at the cached price), per-model request overrides, and
the fake servers' billing of a repeated prefix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coin_scale.errors import UserError
from coin_scale.llm.estimate import estimate_sweep
from coin_scale.llm.gateway import CallMeta, Gateway, GatewayConfig, LocalLimiter
from coin_scale.llm.messages import (
    ChatRequest,
    ImagePart,
    Message,
    ProviderError,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from coin_scale.llm.providers import PROVIDERS, CallOptions, make_client
from coin_scale.llm.providers._prefix import prefix_key
from coin_scale.llm.providers.anthropic_messages import mark_cache_breakpoints
from coin_scale.llm.ratelimit import RateLimits
from coin_scale.llm.settings import Price, load_settings
from coin_scale.testing.fakeserver import CallTool, FakeProviderServer, Reply, Scripted
from coin_scale.testing.fakeserver.prompt_cache import PromptCache, segments

KEY = "sk-test-cache-0123456789"
LONG = "The unit responds to red stars on plain backgrounds; test it carefully. " * 80
"""About 1,400 tokens: a prefix long enough for every provider's cache."""
TOOLS = (
    ToolSpec(
        name="measure",
        description="Measure the unit on images. " * 20,
        parameters={"type": "object", "properties": {"images": {"type": "array"}}},
    ),
    ToolSpec(name="finish", description="Give the answer.", parameters={"type": "object"}),
)
IMAGE = ImagePart(data=b"\x89PNG fake image bytes " * 20, media_type="image/png")
FIRST = Message(role="user", text="Explain unit 7. " + LONG, images=(IMAGE,))

pytestmark = pytest.mark.timeout(60)


def _conversation(rounds: int) -> ChatRequest:
    """An agent's request after `rounds` rounds: the same first message, then tool calls and
    their results appended."""
    messages = [FIRST]
    for r in range(rounds):
        call = ToolCall(id=f"call-{r}", name="measure", arguments={"images": [f"ex-{r}"]})
        messages.append(Message(role="assistant", tool_calls=(call,)))
        result = ToolResult(call_id=f"call-{r}", name="measure", content=f'{{"ex-{r}": {r}.5}}')
        messages.append(Message(role="user", tool_results=(result,)))
    return ChatRequest(system="You explain neurons.", messages=tuple(messages), tools=TOOLS)


def _usages(provider: str, *, caching: bool, rounds: int = 3) -> list[Usage]:
    policy = Scripted((CallTool(name="measure", arguments={"images": ["ex-0"]}),))
    with FakeProviderServer(provider, policy, api_key=KEY) as server:
        client = make_client(provider, api_key=KEY, base_url=server.base_url)
        options = CallOptions(prompt_caching=caching)

        async def run() -> list[Usage]:
            return [
                (
                    await client.complete(
                        _conversation(r), model="test-model", timeout=10, options=options
                    )
                ).usage
                for r in range(rounds)
            ]

        return asyncio.run(run())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_later_rounds_read_the_repeated_prefix_from_the_cache(provider: str) -> None:
    usages = _usages(provider, caching=True)
    assert usages[0].cached_input_tokens == 0
    for before, usage in zip(usages, usages[1:], strict=False):
        # The whole previous request is a prefix of this one (less the fakes' rounding).
        assert usage.cached_input_tokens >= 1024
        assert usage.cached_input_tokens >= before.input_tokens - 200
        assert usage.uncached_input_tokens < usage.input_tokens / 2
    if provider == "anthropic":  # explicit breakpoints: the first round writes the cache
        assert usages[0].cache_write_tokens >= 1024
        assert all(u.cache_write_tokens < usages[0].cache_write_tokens for u in usages[1:])
    else:  # automatic caching is free to write
        assert all(u.cache_write_tokens == 0 for u in usages)


def test_anthropic_caches_nothing_unmarked() -> None:
    usages = _usages("anthropic", caching=False)
    assert all(u.cached_input_tokens == u.cache_write_tokens == 0 for u in usages)


def test_anthropic_breakpoints_mark_tools_system_first_and_last_message() -> None:
    params = {
        "tools": [{"name": "a"}, {"name": "b"}],
        "system": "sys",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
        ],
    }
    assert mark_cache_breakpoints(params) == 4
    assert "cache_control" in params["tools"][-1] and "cache_control" not in params["tools"][0]
    assert params["system"] == [
        {"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}
    ]
    first, middle, last = params["messages"]
    assert "cache_control" in first["content"][-1] and "cache_control" not in first["content"][0]
    assert "cache_control" not in middle["content"][0]
    assert "cache_control" in last["content"][-1]
    one = {"messages": [{"role": "user", "content": [{"type": "text", "text": "only"}]}]}
    assert mark_cache_breakpoints(one) == 1  # the first message is the last: marked once


def test_the_prefix_key_is_the_units_not_the_rounds() -> None:
    assert prefix_key(_conversation(0)) == prefix_key(_conversation(4))
    other = ChatRequest(
        system="You explain neurons.",
        messages=(Message(role="user", text="Explain unit 8. " + LONG, images=(IMAGE,)),),
        tools=TOOLS,
    )
    assert prefix_key(other) != prefix_key(_conversation(0))


def test_the_ledger_records_and_prices_cached_tokens() -> None:
    price = Price(
        input_per_million=3.0, output_per_million=15.0,
        cached_input_per_million=0.3, cache_write_per_million=3.75,
    )  # fmt: skip
    policy = Scripted((Reply(text="red stars"),))
    with FakeProviderServer("anthropic", policy, api_key=KEY) as server:
        client = make_client("anthropic", api_key=KEY, base_url=server.base_url)
        config = GatewayConfig(provider="anthropic", model="claude-sonnet-4-5", price=price)
        gateway = Gateway(client, config, LocalLimiter(RateLimits(requests_per_minute=6000)))

        async def run() -> list[float]:
            meta = CallMeta(run_id="r", unit=7)
            return [(await gateway.complete(_conversation(r), meta)).cost_usd for r in range(2)]

        costs = asyncio.run(run())
    first, second = gateway.drain_ledger()
    assert first.cache_write_tokens and first.cache_write_tokens >= 1024
    assert first.cached_input_tokens == 0
    assert second.cached_input_tokens and second.cached_input_tokens >= 1024
    for row, cost in zip((first, second), costs, strict=True):
        assert row.cost_usd == cost == pytest.approx(
            price.cost(
                row.input_tokens, row.output_tokens,
                cached_input_tokens=row.cached_input_tokens or 0,
                cache_write_tokens=row.cache_write_tokens or 0,
            )
        )  # fmt: skip
    # The second call read most of its input at a tenth of the price.
    assert second.cost_usd < price.cost(second.input_tokens, second.output_tokens) / 2
    assert [r.usage for r in server.log][1].cached_tokens == second.cached_input_tokens


def test_price_of_cached_and_written_tokens() -> None:
    price = Price(
        input_per_million=2.0, output_per_million=8.0, cached_input_per_million=0.5,
        cache_write_per_million=2.5,
    )  # fmt: skip
    usd = price.cost(1_000_000, 0, cached_input_tokens=600_000, cache_write_tokens=100_000)
    assert usd == pytest.approx(0.3 * 2.0 + 0.6 * 0.5 + 0.1 * 2.5)
    plain = Price(input_per_million=2.0, output_per_million=8.0)
    assert plain.cost(1_000_000, 0, cached_input_tokens=500_000) == pytest.approx(2.0)
    usage = Usage(input_tokens=100, output_tokens=5, cached_input_tokens=60, cache_write_tokens=10)
    assert usage.uncached_input_tokens == 40
    assert price.cost_of(usage) == price.cost(100, 5, cached_input_tokens=60, cache_write_tokens=10)


def test_reasoning_models_get_their_request_overrides() -> None:
    settings = load_settings()
    assert settings.overrides("o4-mini") == (("temperature", None),)
    assert settings.overrides("gpt-5-mini-2025-08-07") == (("temperature", None),)
    assert settings.overrides("gpt-4.1-mini") == ()
    request = ChatRequest(system="s", messages=(Message(role="user", text="hi"),))
    policy = Scripted((Reply(text="hello"),))
    with FakeProviderServer("openai", policy, api_key=KEY) as server:
        client = make_client("openai", api_key=KEY, base_url=server.base_url)
        # What api.openai.com answers a reasoning model sent temperature 0:
        with pytest.raises(ProviderError) as info:
            asyncio.run(client.complete(request, model="o4-mini", timeout=10))
        assert info.value.kind == "bad_request" and "temperature" in str(info.value)
        options = CallOptions(overrides=settings.overrides("o4-mini"))
        reply = asyncio.run(client.complete(request, model="o4-mini", timeout=10, options=options))
        assert reply.text == "hello"
        set_one = CallOptions(overrides=(("temperature", 1),))
        assert asyncio.run(
            client.complete(request, model="o3", timeout=10, options=set_one)
        ).text == "hello"


def test_a_malformed_settings_file_is_one_clear_error(tmp_path: Path) -> None:
    shipped = Path(load_settings.__code__.co_filename).resolve().parents[2] / "configs/llm.yaml"
    text = shipped.read_text("utf-8")
    bad_price = tmp_path / "price.yaml"
    bad_price.write_text(text.replace("gpt-4.1: [2.00, 8.00, 0.50]", "gpt-4.1: [2.00]"))
    with pytest.raises(UserError, match=r"price of 'gpt-4.1'"):
        load_settings(bad_price)
    bad_override = tmp_path / "override.yaml"
    bad_override.write_text(text.replace("o3: {temperature: null}", "o3: [temperature]"))
    with pytest.raises(UserError, match=r"request_overrides of 'o3'"):
        load_settings(bad_override)


def test_fake_cache_automatic_and_explicit() -> None:
    big = {"text": "red star " * 900}  # about 2,000 tokens
    auto = PromptCache("automatic", min_tokens=1024, granularity=128)
    first = segments([big, {"text": "round 0"}])
    assert auto.charge("m", first).read == 0
    again = segments([big, {"text": "round 0"}, {"text": "round 1"}])
    charge = auto.charge("m", again)
    assert charge.read == first[0].tokens + first[1].tokens - (first[0].tokens + first[1].tokens) % 128
    assert auto.charge("other-model", again).read == 0  # caches are per model
    small = PromptCache("automatic", min_tokens=1024)
    short = segments([{"text": "tiny"}])
    small.charge("m", short)
    assert small.charge("m", short).read == 0  # under the minimum: never cached

    explicit = PromptCache("explicit", min_tokens=1024)
    unmarked = segments([big, {"text": "a"}])
    assert explicit.charge("m", unmarked).read == 0 and explicit.charge("m", unmarked).read == 0
    marked = segments([big, {"text": "a", "cache_control": {"type": "ephemeral"}}])
    written = explicit.charge("m", marked)
    assert written.read == 0 and written.written == sum(s.tokens for s in marked)
    # The breakpoint moves to a new last block: the old prefix is read, the new tail written.
    moved = segments([big, {"text": "a"}, {"text": "b", "cache_control": {"type": "ephemeral"}}])
    charge = explicit.charge("m", moved)
    assert charge.read == sum(s.tokens for s in marked)
    assert charge.written == moved[2].tokens


def test_the_dry_run_prices_the_cached_prefix() -> None:
    price = load_settings().price("claude-sonnet-4-5")
    common = dict(
        units=10, first_request_tokens=6000, max_rounds=12, keep_last_rounds=3,
        max_output_tokens=1024, limits=RateLimits(requests_per_minute=50), price=price,
        concurrency=4,
    )  # fmt: skip
    cached = estimate_sweep(**common)  # type: ignore[arg-type]
    plain = estimate_sweep(**common, prompt_caching=False)  # type: ignore[arg-type]
    assert cached.cached_input_tokens > cached.input_tokens / 2
    assert plain.cached_input_tokens == 0
    assert cached.usd is not None and plain.usd is not None and cached.usd < plain.usd
    assert cached.usd_max == plain.usd_max  # the ceiling assumes no cache
    assert any("of which cached" in line for line in cached.lines("anthropic", "m"))
