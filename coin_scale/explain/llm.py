"""LLM explainers: many units explained at once by agents whose calls go through gateways.

`prepare` resolves the provider, model, limits, price and API key before any work starts (a
missing key is a `UserError` naming the variable and `--explainer offline`); `explain_subjects`
runs one agent per unit, `concurrency` at a time, and returns their outcomes with the ledger.
The gateways (`Gateways`: the rate-limited gateway actors on Ray) are started by the caller, in
the driver layer (`coin_scale.runtime.pools.gateway_pool`).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from PIL import Image

from coin_scale.agent import (
    AgentConfig,
    AgentOutcome,
    CallContext,
    ChatResult,
    ExemplarImage,
    ExperimentTools,
    SweepBudget,
    UnitSubject,
    explain_unit,
)
from coin_scale.agent.prompts import first_message, system_prompt
from coin_scale.llm.estimate import Estimate, estimate_sweep
from coin_scale.llm.gateway import CallMeta, GatewayConfig, GatewayFailed, GatewayReply
from coin_scale.llm.keys import MissingKey, find_key
from coin_scale.llm.messages import ChatRequest
from coin_scale.llm.providers import PROVIDERS
from coin_scale.llm.ratelimit import RateLimits
from coin_scale.llm.retry import RetryPolicy
from coin_scale.llm.settings import Price, RequestOverrides, load_settings
from coin_scale.storage.schemas import llm_calls


@dataclass(frozen=True, kw_only=True)
class LLMExplainerConfig:
    """Provider, model, limits and budgets of an LLM-explained sweep (never the key)."""

    provider: str
    """openai | anthropic | gemini."""
    model: str | None = None
    """Provider model name; None: the provider's default in configs/llm.yaml."""
    base_url: str | None = None
    """Another endpoint for the provider's API (vLLM, Ollama, a proxy, a local fake server)."""
    requests_per_minute: float | None = None
    """None: the provider's limit in configs/llm.yaml."""
    tokens_per_minute: float | None = None
    max_rounds: int = 12
    unit_budget_usd: float | None = 1.0
    sweep_budget_usd: float | None = 20.0
    unit_budget_tokens: int | None = 200_000
    sweep_budget_tokens: int | None = None
    concurrency: int = 32
    """Units explained at the same time."""
    gateway_actors: int = 1
    """Async gateway actors holding the client (each handles many calls at once)."""
    timeout_s: float = 120.0
    """Timeout of each LLM call attempt."""
    max_attempts: int = 6
    """Attempts per call, retries included."""
    cache_dir: str | None = None
    """Request cache; a rerun of the same requests is answered from it and pays nothing."""
    settings_path: str | None = None
    """Another configs/llm.yaml."""
    describe: str | None = None
    """The agents' `describe` and `summarize` tools (a vision call through gateways of their
    own): None off, "default" the provider's `describe_model` in configs/llm.yaml, or a model."""
    prompt_caching: bool = True
    """Mark the requests' unchanging prefix for the provider's prompt cache (Anthropic's cache
    breakpoints, OpenAI's `prompt_cache_key`); False sends them as before, for comparisons."""

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown LLM provider {self.provider!r}; expected one of {PROVIDERS}")
        if self.max_rounds < 1 or self.concurrency < 1 or self.gateway_actors < 1:
            raise ValueError("max_rounds, concurrency and gateway_actors must be at least 1")


@dataclass(frozen=True, kw_only=True)
class PreparedLLM:
    """Everything resolved from the config and configs/llm.yaml, plus the key (memory only)."""

    config: LLMExplainerConfig
    model: str
    limits: RateLimits
    price: Price | None
    key_env: tuple[str, ...]
    api_key: str | None
    """None only for a dry run without a key."""
    overrides: RequestOverrides = ()
    """The model's request overrides from configs/llm.yaml."""

    def __repr__(self) -> str:  # never print the key
        return f"PreparedLLM(provider={self.config.provider!r}, model={self.model!r})"

    def agent_config(self, image_size: int = 128) -> AgentConfig:
        return AgentConfig(
            max_rounds=self.config.max_rounds, image_size=image_size,
            max_usd=self.config.unit_budget_usd, max_tokens=self.config.unit_budget_tokens,
            usd_per_million_tokens=self.price.output_per_million if self.price else 0.0,
        )  # fmt: skip

    def gateway_config(self) -> GatewayConfig:
        return GatewayConfig(
            provider=self.config.provider, model=self.model, timeout_s=self.config.timeout_s,
            retry=RetryPolicy(max_attempts=self.config.max_attempts), price=self.price,
            cache_dir=self.config.cache_dir, overrides=self.overrides,
            prompt_caching=self.config.prompt_caching,
        )  # fmt: skip


def prepare(config: LLMExplainerConfig, *, require_key: bool = True) -> PreparedLLM:
    """Resolve the model, limits and price; find the key (`MissingKey` when required and absent)."""
    settings = load_settings(config.settings_path)
    provider = settings.provider(config.provider)
    limits = provider.rate_limits
    if config.requests_per_minute or config.tokens_per_minute:
        limits = replace(
            limits,
            requests_per_minute=config.requests_per_minute or limits.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute or limits.tokens_per_minute,
        )
    model = config.model or provider.default_model
    try:
        key: str | None = find_key(provider)
    except MissingKey:
        if require_key:
            raise
        key = None
    return PreparedLLM(
        config=config, model=model, limits=limits, price=settings.price(model),
        key_env=provider.key_env, api_key=key, overrides=settings.overrides(model),
    )  # fmt: skip


def prepare_describer(prepared: PreparedLLM) -> PreparedLLM | None:
    """The describe model's `PreparedLLM` (same provider, endpoint and key; its own model, price
    and so its own rate limiter, cache entries and ledger rows), or None when `describe` is off."""
    describe = prepared.config.describe
    if describe is None:
        return None
    settings = load_settings(prepared.config.settings_path)
    model = settings.provider(prepared.config.provider).describe_model
    model = model if describe == "default" else describe
    return replace(
        prepared, config=replace(prepared.config, model=model, describe=None), model=model,
        price=settings.price(model), overrides=settings.overrides(model),
    )  # fmt: skip


DESCRIBE_TYPICAL_CALLS = 2
"""describe and summarize calls a unit's agent usually makes."""
DESCRIBE_IMAGES = 3
"""Images a describe or summarize call usually carries (at most 16)."""


def describe_plan_lines(describe: PreparedLLM | None, *, units: int, max_rounds: int) -> list[str]:
    """A dry run's lines for the describe model: calls, tokens and dollars, typical and at most
    (every round a call of 16 images)."""
    if describe is None:
        return []
    from coin_scale.llm.messages import TOKENS_PER_IMAGE

    def tokens(calls: int, images: int) -> tuple[int, int]:
        return calls * (150 + images * TOKENS_PER_IMAGE), calls * (100 + 60 * images)

    calls, calls_max = units * DESCRIBE_TYPICAL_CALLS, units * max_rounds
    (tin, tout), (tin_max, tout_max) = tokens(calls, DESCRIBE_IMAGES), tokens(calls_max, 16)
    price = describe.price

    def usd(i: int, o: int) -> str:
        return f"${price.cost(i, o):,.2f}" if price else "unknown (model not in the price table)"

    minutes = calls / describe.limits.requests_per_minute
    return [
        f"describe / summarize by {describe.config.provider}:{describe.model} (gateways of "
        "their own):",
        f"  calls          {calls:>10,}   (at most {calls_max:,})",
        f"  input tokens   {tin:>10,}   (at most {tin_max:,})",
        f"  cost           {usd(tin, tout):>10}   (at most {usd(tin_max, tout_max)})",
        f"  time           {minutes:>10.1f} min at its rate limit (overlaps the agents' calls)",
    ]


def limit_lines(prepared: PreparedLLM, scope: str) -> list[str]:
    """A dry run's last lines: the rate limits, the budgets (per unit and per `scope`, e.g.
    'sweep') and whether the API key was found."""
    limits, cfg = prepared.limits, prepared.config
    lines = [
        f"  limits         {limits.requests_per_minute:g} requests/min"
        + (f", {limits.tokens_per_minute:g} tokens/min" if limits.tokens_per_minute else "")
        + f"; budgets ${cfg.unit_budget_usd} per unit, ${cfg.sweep_budget_usd} per {scope}"
    ]
    key = "found" if prepared.api_key else "MISSING (the real run will stop before any work)"
    lines.append(f"  API key        {' or '.join(prepared.key_env)}: {key}")
    return lines


def _blank_png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def dry_run(
    prepared: PreparedLLM,
    *,
    units: int,
    exemplars: int,
    layer: str,
    model: str,
    generates: bool = False,
    edits_images: bool = False,
) -> Estimate:
    """The estimate for explaining `units` units with `exemplars` exemplars each; the first
    request is built with the real prompts and the tools the agents will have (`describe` when
    configured, `text2image` and `edit` by instruction when the generator `generates` /
    `edits_images`); grey images stand in for the exemplars."""
    agent = prepared.agent_config()
    png = _blank_png(agent.image_size)
    subject = UnitSubject(
        model=model, layer=layer, unit=0,
        exemplars=tuple(ExemplarImage(png=png, activation=1.0) for _ in range(exemplars)),
    )  # fmt: skip
    from unity_pool.tools import RenderTools

    stand_in = _NoBackend()
    render = RenderTools(
        text_to_image=stand_in if generates else None,  # type: ignore[arg-type]
        image_editor=stand_in if edits_images else None,  # type: ignore[arg-type]
    )
    describer = stand_in if prepared.config.describe is not None else None
    tools = ExperimentTools(
        subject, _NoMeter(), render, describer, image_size=agent.image_size  # type: ignore[arg-type]
    )
    specs = tools.specs()
    first = ChatRequest(
        system=system_prompt(subject, specs, max_rounds=agent.max_rounds),
        messages=(first_message(subject, n=min(exemplars, agent.exemplars_shown), image_size=agent.image_size),),
        tools=specs, max_tokens=agent.max_output_tokens,
    )  # fmt: skip
    return estimate_sweep(
        units=units, first_request_tokens=first.estimate_input_tokens(),
        max_rounds=agent.max_rounds, keep_last_rounds=agent.keep_last_rounds,
        max_output_tokens=agent.max_output_tokens, limits=prepared.limits, price=prepared.price,
        concurrency=prepared.config.concurrency, prompt_caching=prepared.config.prompt_caching,
    )  # fmt: skip


class _NoMeter:
    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        raise RuntimeError("a dry run measures nothing")


class _NoBackend:
    """Stands in for the generator and the describer: a dry run only lists their tools."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"a dry run calls nothing ({name})")

        return refuse


OnOutcome = Callable[[UnitSubject, AgentOutcome, list[llm_calls.Row]], None]
"""Called as each subject's agent finishes: its outcome and the ledger rows of its calls."""


@dataclass(frozen=True, kw_only=True)
class AgentsResult:
    outcomes: list[AgentOutcome]
    """One per subject, in order."""
    calls: list[llm_calls.Row]
    """The ledger of every LLM request made."""


class Gateways(Protocol):
    """Where the agents' LLM calls go: the gateway actors on Ray
    (`coin_scale.runtime.pools.gateway_pool`), or any object answering the same way."""

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """One request; raises `GatewayFailed` (with its ledger row) when it fails."""
        ...

    def ledger(self) -> list[llm_calls.Row]:
        """The ledger rows of every call answered since the last time it was asked."""
        ...


def explain_subjects(
    prepared: PreparedLLM,
    subjects: Sequence[UnitSubject],
    make_tools: Callable[[UnitSubject], ExperimentTools],
    *,
    run_id: str,
    gateways: Gateways,
    progress: bool = True,
    on_outcome: OnOutcome | None = None,
) -> AgentsResult:
    """Explain every subject with its own agent, `concurrency` at a time; calls go through
    `gateways` (started by the caller). A failed unit is an outcome with its error, never an
    exception. `on_outcome` is called as each subject finishes, with its outcome and its calls
    (to checkpoint it)."""
    outcomes = asyncio.run(
        _run_all(
            prepared, subjects, make_tools, gateways.complete, run_id=run_id, progress=progress,
            on_outcome=on_outcome,
        )
    )
    return AgentsResult(outcomes=outcomes, calls=gateways.ledger())


async def _run_all(prepared, subjects, make_tools, complete, *, run_id, progress, on_outcome=None):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    cfg = prepared.config
    agent = prepared.agent_config()
    budget = SweepBudget(max_tokens=cfg.sweep_budget_tokens, max_usd=cfg.sweep_budget_usd)
    gate = asyncio.Semaphore(cfg.concurrency)
    bar = tqdm(total=len(subjects), desc=f"explaining ({cfg.provider}:{prepared.model})",
               unit="unit", disable=not progress)  # fmt: skip

    def chat_for(calls: list[llm_calls.Row]):  # type: ignore[no-untyped-def]
        """A chat function that also keeps the ledger rows of one subject's calls in `calls`."""

        async def chat(request: ChatRequest, ctx: CallContext) -> ChatResult:
            meta = CallMeta(run_id=run_id, layer=ctx.layer, unit=ctx.unit, round=ctx.round)
            try:
                reply = await complete(request, meta)
            except GatewayFailed as failed:
                calls.append(failed.call)
                raise failed.error from None
            calls.append(reply.call)
            return ChatResult(response=reply.response, cost_usd=reply.cost_usd, cached=reply.cached)

        return chat

    async def one(subject: UnitSubject) -> AgentOutcome:
        calls: list[llm_calls.Row] = []
        async with gate:
            outcome = await explain_unit(
                subject, make_tools(subject), chat_for(calls), config=agent, sweep_budget=budget,
                run_id=run_id, explainer=cfg.provider, llm_model=prepared.model,
            )  # fmt: skip
        if on_outcome is not None:
            on_outcome(subject, outcome, calls)
        bar.update(1)
        bar.set_postfix(usd=f"{budget.usd:.2f}")
        return outcome

    try:
        return list(await asyncio.gather(*(one(s) for s in subjects)))
    finally:
        bar.close()


def llm_request_cache(warehouse: str) -> str:
    """The LLM request cache of a warehouse (`<warehouse>/_cache/llm`): a rerun of a sweep pays
    only for new requests.

    Node-local for a warehouse on an object store (see `coin_scale.storage.fs.local_dir`)."""
    from coin_scale.storage.fs import local_dir

    return str(local_dir(warehouse, "_cache/llm"))
