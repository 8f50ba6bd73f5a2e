"""Rate limits and the request cache of the LLM gateway: pure arithmetic with a given clock."""

from __future__ import annotations

import bisect
import hashlib
import json
import random

import pytest

from coin_scale.llm.cache import RequestCache, canonical_json, key_of_json, request_key
from coin_scale.llm.ratelimit import RateLimiter, RateLimits, SlidingWindow


def _send(limiter: RateLimiter, n: int, tokens: int = 0) -> list[float]:
    """Start times of n requests from eager callers (each sends as soon as it may)."""
    now, sent = 0.0, []
    for _ in range(n):
        wait, start = limiter.reserve(tokens=tokens, now=now)
        assert start == pytest.approx(now + wait)
        sent.append(start)
    return sent


def _max_in_any_window(times: list[float], length: float = 60.0) -> int:
    return max(bisect.bisect_left(times, t + length) - i for i, t in enumerate(times))


def test_requests_are_paced_evenly_and_no_minute_holds_more_than_the_limit():
    limiter = RateLimiter(RateLimits(requests_per_minute=600, margin_s=0.0), now=0.0)
    sent = _send(limiter, 3000)
    gaps = {round(b - a, 9) for a, b in zip(sent, sent[1:], strict=False)}
    assert gaps == {0.1}
    assert _max_in_any_window(sent) == 600
    assert sent[-1] == pytest.approx(299.9)  # the full configured rate, not less


def test_burst_is_allowed_but_never_beyond_the_minute():
    limiter = RateLimiter(RateLimits(requests_per_minute=60, burst=10, margin_s=0.0), now=0.0)
    sent = _send(limiter, 300)
    assert sent[:10] == [0.0] * 10 and sent[10] == pytest.approx(1.0)
    assert _max_in_any_window(sent) == 60


def test_margin_keeps_late_sends_within_the_limit():
    limiter = RateLimiter(RateLimits(requests_per_minute=600, margin_s=0.5), now=0.0)
    sent = _send(limiter, 1500)
    # every request may be up to 0.5 s late without a window of 60 s seeing 601
    late = [t + (0.49 if i % 600 == 0 else 0.0) for i, t in enumerate(sent)]
    assert _max_in_any_window(sorted(late)) <= 600
    assert len(sent) / sent[-1] * 60 > 0.95 * 600


def test_tokens_per_minute_bind_when_requests_are_large():
    limiter = RateLimiter(
        RateLimits(requests_per_minute=1000, tokens_per_minute=6000, burst=100, margin_s=0.0),
        now=0.0,
    )
    waits = [limiter.reserve(tokens=3000, now=0.0)[0] for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 60.0, 60.0])


def test_an_oversized_request_goes_through_and_later_ones_wait():
    limiter = RateLimiter(
        RateLimits(requests_per_minute=100, tokens_per_minute=1000, margin_s=0.0), now=0.0
    )
    assert limiter.reserve(tokens=5000, now=0.0)[0] == 0.0
    assert limiter.reserve(tokens=10, now=0.0)[0] == pytest.approx(60.0)


def test_settle_returns_unused_tokens_and_retry_after_blocks():
    limiter = RateLimiter(
        RateLimits(requests_per_minute=60, tokens_per_minute=600, burst=5, margin_s=0.0), now=0.0
    )
    _, start = limiter.reserve(tokens=600, now=0.0)
    limiter.settle(estimated=600, actual=300, start=start)  # the reply used half: give it back
    assert limiter.reserve(tokens=300, now=0.0)[0] == 0.0
    limiter.penalise(retry_after=12.0, now=0.0)
    assert limiter.reserve(tokens=0, now=0.0)[0] == pytest.approx(12.0)
    assert limiter.reserve(tokens=1, now=0.0)[0] == pytest.approx(60.0)  # the 600 are spent


def test_the_windows_running_total_is_the_sum_of_its_entries():
    window = SlidingWindow(capacity=1000, length=10.0)
    rng = random.Random(0)
    now = 0.0
    for step in range(500):
        now += rng.random()
        start = window.earliest(rng.randint(1, 400), now)
        window.add(rng.randint(1, 400), start)
        if step % 3 == 0:
            window.adjust_last(-rng.randint(0, 500), start)  # clipped at 0 when it overshoots
        assert window.held == pytest.approx(sum(amount for _, amount in window.entries))
        assert all(amount >= 0 for _, amount in window.entries)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimits(requests_per_minute=0)
    with pytest.raises(ValueError, match="tokens_per_minute"):
        RateLimits(requests_per_minute=1, tokens_per_minute=-5)
    with pytest.raises(ValueError, match="burst"):
        RateLimits(requests_per_minute=1, burst=0)


def test_request_key_is_canonical_and_refuses_secrets():
    a = request_key("openai", "gpt-x", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0})
    b = request_key("openai", "gpt-x", {"temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    c = request_key("anthropic", "gpt-x", {"temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    assert a == b != c and len(a) == 64
    with pytest.raises(ValueError, match="api_key"):
        request_key("openai", "m", {"api_key": "sk-secret", "messages": []})


def test_the_key_of_a_request_encoded_once_is_the_key_of_the_request():
    """The gateway encodes a request once for its key and its token estimate: same digest as
    before, so request caches written earlier still hit."""
    request = {"messages": [{"role": "user", "content": "ünïcode \"quoted\" label"}],
               "tools": [{"name": "render", "parameters": {"b": 1, "a": [2, {"z": None}]}}],
               "temperature": 0.0}  # fmt: skip
    legacy = hashlib.sha256(
        json.dumps({"provider": "openai", "model": "gpt-ü", "request": request}, sort_keys=True,
                   separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()  # fmt: skip
    assert key_of_json("openai", "gpt-ü", canonical_json(request)) == legacy
    assert request_key("openai", "gpt-ü", request) == legacy


def test_cache_round_trip_and_misses(tmp_path):
    cache = RequestCache(tmp_path)
    key = request_key("openai", "m", {"messages": []})
    assert cache.get(key) is None
    cache.put(key, {"text": "a label", "usage": {"input_tokens": 3}})
    assert cache.get(key) == {"text": "a label", "usage": {"input_tokens": 3}}
    (tmp_path / key[:2] / f"{key}.json").write_text("{not json")
    assert cache.get(key) is None
    assert not list(tmp_path.rglob("*.tmp"))
