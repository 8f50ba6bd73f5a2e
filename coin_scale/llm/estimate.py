"""`--dry-run`: what an LLM-explained sweep will cost before anything is spent.

Calls, tokens and dollars are given as a typical figure and a ceiling. The ceiling is exact under
the configured caps (every unit uses every round, every round's context at its trimmed maximum);
the typical figure assumes the rounds MAIA-style agents usually take. Minutes follow from the
rate limits, the concurrency and a per-call latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coin_scale.llm.messages import TOKENS_PER_IMAGE
from coin_scale.llm.ratelimit import RateLimits
from coin_scale.llm.settings import Price

TYPICAL_ROUNDS = 5
"""Rounds a unit usually takes: exemplars, two or three experiments, finish."""
ROUND_TEXT_TOKENS = 400
"""Text tokens one round adds to the context (tool call and its JSON result)."""
ROUND_IMAGES = 4
"""Images one round's tool result usually carries."""
OUTPUT_TOKENS_PER_CALL = 300
"""Typical output tokens of one call (a tool call with its arguments)."""
SUMMARY_TOKENS_PER_ROUND = 60
"""Tokens per summarised (trimmed) round."""


@dataclass(frozen=True, kw_only=True)
class Estimate:
    units: int
    calls: int
    calls_max: int
    input_tokens: int
    input_tokens_max: int
    cached_input_tokens: int = 0
    """Of the typical input: the prefix each call repeats from the one before (tools, system
    prompt, exemplars, the rounds not yet summarised), read from the provider's prompt cache."""
    output_tokens: int
    output_tokens_max: int
    usd: float | None
    """None when the model is not in the price table."""
    usd_max: float | None
    minutes: float
    minutes_max: float
    bound_by: str
    """What sets the typical duration: 'requests/min', 'tokens/min' or 'latency'."""

    def lines(self, provider: str, model: str) -> list[str]:
        """The dry-run report, one line per figure."""

        def usd(v: float | None) -> str:
            return "unknown (model not in the price table)" if v is None else f"${v:,.2f}"

        return [
            f"dry run: {self.units} units explained by {provider}:{model}; nothing is sent",
            f"  calls          {self.calls:>10,}   (at most {self.calls_max:,})",
            f"  input tokens   {self.input_tokens:>10,}   (at most {self.input_tokens_max:,})",
            f"    of which cached {self.cached_input_tokens:>7,}   (read from the prompt cache at "
            "its price; the ceiling assumes none)",
            f"  output tokens  {self.output_tokens:>10,}   (at most {self.output_tokens_max:,})",
            f"  cost           {usd(self.usd):>10}   (at most {usd(self.usd_max)})",
            f"  time           {self.minutes:>10.1f} min (at most {self.minutes_max:.1f} min; "
            f"set by {self.bound_by})",
        ]


def _input_tokens(first: int, rounds: int, keep_last: int, images_each: int) -> int:
    """Input tokens of `rounds` calls: call r carries the first message, a summary of the rounds
    beyond the last `keep_last`, and those last rounds in full."""
    per_round = ROUND_TEXT_TOKENS + images_each * TOKENS_PER_IMAGE
    total = 0
    for r in range(rounds):
        kept = min(r, keep_last)
        total += first + kept * per_round + (r - kept) * SUMMARY_TOKENS_PER_ROUND
    return total


def _cached_tokens(first: int, rounds: int, keep_last: int, images_each: int) -> int:
    """Of `_input_tokens`: what call r shares with call r - 1 from the start: the first request,
    and the earlier rounds while none is summarised yet (a summary changes what follows the first
    message)."""
    per_round = ROUND_TEXT_TOKENS + images_each * TOKENS_PER_IMAGE
    return sum(first + ((r - 1) * per_round if r <= keep_last else 0) for r in range(1, rounds))


def estimate_sweep(
    *,
    units: int,
    first_request_tokens: int,
    max_rounds: int,
    keep_last_rounds: int,
    max_output_tokens: int,
    limits: RateLimits,
    price: Price | None,
    concurrency: int,
    latency_s: float = 6.0,
    prompt_caching: bool = True,
) -> Estimate:
    """The estimate for `units` units whose first request is `first_request_tokens` long. The
    typical cost reads the repeated prefix at the cached price (and, where the provider bills
    cache writes, writes the rest); the ceiling prices every token at the full price."""
    typical_rounds = min(TYPICAL_ROUNDS, max_rounds)
    calls, calls_max = units * typical_rounds, units * max_rounds
    tin = units * _input_tokens(
        first_request_tokens, typical_rounds, keep_last_rounds, ROUND_IMAGES
    )
    tin_max = units * _input_tokens(
        first_request_tokens, max_rounds, keep_last_rounds, ROUND_IMAGES * 2
    )
    tout, tout_max = calls * OUTPUT_TOKENS_PER_CALL, calls_max * max_output_tokens
    explicit = price is not None and price.cache_write_per_million is not None
    cached = (
        units * _cached_tokens(first_request_tokens, typical_rounds, keep_last_rounds, ROUND_IMAGES)
        if prompt_caching or not explicit
        else 0
    )
    usd = None
    if price is not None:
        written = tin - cached if explicit and prompt_caching else 0
        usd = price.cost(tin, tout, cached_input_tokens=cached, cache_write_tokens=written)

    def minutes(n_calls: int, tokens: int, rounds: int) -> tuple[float, str]:
        by_requests = n_calls / limits.requests_per_minute
        by_tokens = tokens / limits.tokens_per_minute if limits.tokens_per_minute else 0.0
        by_latency = math.ceil(units / max(1, concurrency)) * rounds * latency_s / 60
        best = max(
            (by_requests, "requests/min"), (by_tokens, "tokens/min"), (by_latency, "latency")
        )
        return best

    m, bound = minutes(calls, tin + tout, typical_rounds)
    m_max, _ = minutes(calls_max, tin_max + tout_max, max_rounds)
    return Estimate(
        units=units, calls=calls, calls_max=calls_max, input_tokens=tin,
        input_tokens_max=tin_max, output_tokens=tout, output_tokens_max=tout_max,
        cached_input_tokens=cached, usd=usd,
        usd_max=price.cost(tin_max, tout_max) if price else None,
        minutes=m, minutes_max=m_max, bound_by=bound,
    )  # fmt: skip
