"""Rate limits and the request cache of the LLM gateway: pure arithmetic with a given clock."""

from __future__ import annotations

import pytest

from coin_scale.llm.cache import RequestCache, request_key
from coin_scale.llm.ratelimit import RateLimiter, RateLimits


def test_requests_per_minute_are_honoured_over_a_long_run():
    limiter = RateLimiter(RateLimits(requests_per_minute=60), now=0.0)
    now, sent = 0.0, []
    for _ in range(300):
        now += limiter.reserve(tokens=0, now=now)
        sent.append(now)
    # A burst of one minute's worth, then exactly one request per second.
    assert sent[59] == 0.0 and sent[60] == pytest.approx(1.0)
    assert sent[-1] == pytest.approx(240.0)
    window = [t for t in sent if 100.0 <= t < 160.0]
    assert len(window) == 60


def test_tokens_per_minute_bind_when_requests_are_large():
    limiter = RateLimiter(RateLimits(requests_per_minute=1000, tokens_per_minute=6000), now=0.0)
    waits = [limiter.reserve(tokens=3000, now=0.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 30.0, 60.0])


def test_an_oversized_request_goes_through_and_later_ones_wait():
    limiter = RateLimiter(RateLimits(requests_per_minute=100, tokens_per_minute=1000), now=0.0)
    assert limiter.reserve(tokens=5000, now=0.0) == 0.0
    assert limiter.reserve(tokens=10, now=0.0) == pytest.approx((4000 + 10) / (1000 / 60))


def test_settle_and_retry_after():
    limiter = RateLimiter(RateLimits(requests_per_minute=60, tokens_per_minute=600), now=0.0)
    limiter.reserve(tokens=600, now=0.0)
    limiter.settle(estimated=600, actual=300, now=0.0)  # the reply used half: give it back
    assert limiter.reserve(tokens=300, now=0.0) == 0.0
    limiter.penalise(retry_after=12.0, now=0.0)
    assert limiter.reserve(tokens=0, now=0.0) == pytest.approx(13.0)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimits(requests_per_minute=0)
    with pytest.raises(ValueError, match="tokens_per_minute"):
        RateLimits(requests_per_minute=1, tokens_per_minute=-5)


def test_request_key_is_canonical_and_refuses_secrets():
    a = request_key("openai", "gpt-x", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    b = request_key("openai", "gpt-x", {"temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    c = request_key("anthropic", "gpt-x", {"temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    assert a == b != c and len(a) == 64
    with pytest.raises(ValueError, match="api_key"):
        request_key("openai", "m", {"api_key": "sk-secret", "messages": []})


def test_cache_round_trip_and_misses(tmp_path):
    cache = RequestCache(tmp_path)
    key = request_key("openai", "m", {"messages": []})
    assert cache.get(key) is None
    cache.put(key, {"text": "a label", "usage": {"input_tokens": 3}})
    assert cache.get(key) == {"text": "a label", "usage": {"input_tokens": 3}}
    (tmp_path / key[:2] / f"{key}.json").write_text("{not json")
    assert cache.get(key) is None
    assert not list(tmp_path.rglob("*.tmp"))
