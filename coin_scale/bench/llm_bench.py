"""`coin-scale bench llm`: the LLM gateway and agents against a local fake provider server.

Three measurements, each in one run, as ratios:
- rate: many concurrent callers through the gateway actors and the cluster's rate limiter
  against a server with `latency_s` per call; achieved requests/min vs the configured limit, and
  the most requests the server saw in any 60 s window (the server also enforces the limit and
  would answer 429 to one request too many);
- concurrency: `units` units explained by the scripted experimenter policy one at a time, then
  all at once; the speed-up (and, with an instant server, the floor set by this machine's CPUs:
  rendering, measuring, encoding requests, with the CPU seconds each process of this node spent
  meanwhile: `coin_scale.bench.cpu`);
- faults: the same units at once with `fault_rate` of the calls answered 429 (with Retry-After)
  or 500; how many units still end with a valid label.
The units are those of the probe CNN architecture with random weights (the bench measures the
engine, not labels); exemplars are its top images of a rendered probe set. The agents measure on
model replicas, as in a sweep (`coin_scale.sweep.agents.agent_replicas`): agents at once share
forward passes, and the concurrency part reports how many passes their measurements took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from coin_scale.bench.cpu import CPUMeter

log = logging.getLogger(__name__)

BENCH_KEY = "bench-key-for-the-local-fake-server"
"""Not a secret: the fake server is on 127.0.0.1 and checks nothing else."""

PARTS = ("rate", "concurrency", "faults", "cost")


@dataclass(frozen=True, kw_only=True)
class LLMBenchConfig:
    latency_s: float = 0.3
    """Server latency per call."""
    rpm: int = 600
    """Configured requests-per-minute limit of the rate measurement."""
    rate_seconds: float = 150.0
    """Length of the rate measurement (over 60 s so that full minute windows are seen)."""
    callers: int = 16
    """Concurrent callers in the rate measurement."""
    units: int = 32
    """Units explained in the concurrency and fault measurements."""
    fault_rate: float = 0.2
    """Share of calls answered with an error in the fault measurement (half 429, half 500)."""
    retry_after_s: float = 1.0
    """Retry-After of the injected 429s."""
    gateway_actors: int = 2
    """Gateway actors holding the client in the agent parts."""
    cost_units: int = 8
    """Units explained per provider and setting in the cost measurement."""
    address: str | None = None
    parts: tuple[str, ...] = ("rate", "concurrency", "faults")

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.rpm < 1 or self.rate_seconds <= 0 or self.units < 1:
            raise ValueError("latency_s >= 0, rpm >= 1, rate_seconds > 0 and units >= 1 are needed")
        if not 0 <= self.fault_rate < 1:
            raise ValueError(f"fault_rate must be in [0, 1), got {self.fault_rate}")
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")


def run_llm_bench(config: LLMBenchConfig) -> dict[str, Any]:
    """Run the chosen parts; a dict of their figures (JSON-ready)."""
    from coin_scale.actors.cluster import connect

    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        os.environ[name] = BENCH_KEY
    session = connect(config.address)
    try:
        out: dict[str, Any] = {"config": {k: v for k, v in vars(config).items() if k != "address"}}
        if "rate" in config.parts:
            out["rate"] = _rate(config)
        if {"concurrency", "faults", "cost"} & set(config.parts):
            from coin_scale.runtime.agent_replicas import agent_replicas

            payload, layer = _probe_model()
            with agent_replicas(payload, layer, address=config.address) as replicas:
                batcher = replicas.batcher
                subjects, tools_for = _subjects(config.units, payload, layer, replicas)
                if "concurrency" in config.parts:
                    out["concurrency"] = _concurrency(config, subjects, tools_for, batcher)
                if "faults" in config.parts:
                    out["faults"] = _faults(config, subjects, tools_for)
                if "cost" in config.parts:
                    out["cost"] = _cost(config, subjects[: config.cost_units], tools_for)
        return out
    finally:
        session.close()


def _rate(config: LLMBenchConfig) -> dict[str, Any]:
    from coin_scale.actors.llm_gateway import GatewayPool, GatewaySpec
    from coin_scale.llm.gateway import GatewayConfig
    from coin_scale.llm.ratelimit import RateLimits
    from coin_scale.testing.fakeserver import (
        FakeProviderServer,
        Faults,
        ReplyPolicy,
        max_in_window,
    )

    faults = Faults(latency_s=config.latency_s, rpm_limit=config.rpm)
    with FakeProviderServer("openai", ReplyPolicy(), faults=faults) as server:
        spec = GatewaySpec(
            config=GatewayConfig(provider="openai", model="bench-rate", timeout_s=30.0),
            limits=RateLimits(requests_per_minute=config.rpm),
            base_url=server.base_url,
        )
        pool = GatewayPool(spec, BENCH_KEY, actors=2)
        try:
            asyncio.run(_warm(pool))
            server.clear_log()
            sent = asyncio.run(_hammer(pool, config))
        finally:
            pool.shutdown()
        records = server.log
    arrivals = sorted(r.arrived_at for r in records)
    refused = sum(1 for r in records if r.status == 429)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    achieved = (len(arrivals) - 1) / span * 60 if span > 0 else float("nan")
    busiest = max_in_window(records, 60.0)
    return {
        "configured_rpm": config.rpm,
        "requests": len(arrivals),
        "replies_ok": sent,
        "seconds": round(span, 2),
        "achieved_rpm": round(achieved, 1),
        "achieved_over_configured": round(achieved / config.rpm, 4),
        "max_in_any_60s_window": busiest,
        "refused_by_server_429": refused,
    }


async def _warm(pool: Any, *, calls: int = 1) -> None:
    """`calls` calls at once (each to a different actor, the least loaded), so actor start-up is
    not part of what is measured."""
    from coin_scale.llm.gateway import CallMeta
    from coin_scale.llm.messages import ChatRequest, Message

    await asyncio.gather(
        *(
            pool.complete(
                ChatRequest(system="warm-up", messages=(Message(role="user", text=f"warm-up {i}"),)),
                CallMeta(run_id="bench-warm"),
            )
            for i in range(calls)
        )
    )


async def _hammer(pool: Any, config: LLMBenchConfig) -> int:
    """`config.callers` callers sending distinct requests until `rate_seconds` have passed."""
    from coin_scale.llm.gateway import CallMeta
    from coin_scale.llm.messages import ChatRequest, Message

    deadline = time.monotonic() + config.rate_seconds
    ok = 0

    async def caller(c: int) -> None:
        nonlocal ok
        i = 0
        while time.monotonic() < deadline:
            request = ChatRequest(
                system="bench", messages=(Message(role="user", text=f"caller {c} request {i}"),)
            )
            await pool.complete(request, CallMeta(run_id="bench-rate"))
            ok += 1
            i += 1

    await asyncio.gather(*(caller(c) for c in range(config.callers)))
    return ok


def _probe_model():  # type: ignore[no-untyped-def]
    """The probe CNN with random weights (seed 0) as a payload replicas build, and its last block."""
    import torch

    from coin_scale.models.layers import describe_layers, last_block
    from coin_scale.models.payload import ModelPayload
    from coin_scale.models.preprocess import Preprocess
    from coin_scale.models.probe_cnn import probe_cnn

    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = probe_cnn().eval()
    preprocess = Preprocess(resize=64, crop=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    payload = ModelPayload(
        model_id="probe_cnn", arch="probe_cnn", arch_kwargs={}, weights_id="none-seed0",
        random_weights=True, preprocess=preprocess, class_names=(),
        state_dict={k: v.detach().clone() for k, v in module.state_dict().items()},
    )  # fmt: skip
    return payload, last_block(module, describe_layers(module, "probe_cnn", 64))


def _subjects(n_units: int, payload, layer, replicas):  # type: ignore[no-untyped-def]
    """`n_units` units of the probe CNN, with their top rendered exemplars, and `tools_for`, which
    gives each run a tools maker whose meters measure on `replicas` (`AgentReplicas`)."""
    import io

    import numpy as np
    from PIL import Image

    from coin_scale.agent import ExemplarImage, ExperimentTools, UnitSubject
    from unity_pool.render_cache import CachedRenderer
    from unity_pool.sampling import sample_scenes
    from unity_pool.tools import LocalRenderer, RenderTools

    scenes = sample_scenes(96, seed=0, width=64, height=64)
    rendered = LocalRenderer().render_many(scenes)
    images = [Image.open(io.BytesIO(r.data)).convert("RGB") for r in rendered]
    pixels = np.stack([payload.preprocess.load(im).numpy() for im in images])
    values = replicas.batcher.activations(pixels)
    subjects = []
    for unit in range(min(n_units, layer.units)):
        top = np.argsort(-values[:, unit], kind="stable")[:8]
        subjects.append(
            UnitSubject(
                model="probe_cnn (random weights)",
                layer=layer.name,
                unit=unit,
                exemplars=tuple(
                    ExemplarImage(
                        png=rendered[i].data,
                        activation=float(values[i, unit]),
                        attributes=dict(rendered[i].attributes),
                    )
                    for i in top
                ),
            )  # fmt: skip
        )

    def tools_for():  # type: ignore[no-untyped-def]
        """A fresh tools maker for one run, its agents sharing one render cache (as a sweep's
        agents share theirs: `runtime.agent_images`), and that cache. The batcher forgets the
        images measured in earlier runs."""
        cache = CachedRenderer(LocalRenderer())
        replicas.batcher.clear_memo()

        def make_tools(subject: UnitSubject) -> ExperimentTools:
            return ExperimentTools(
                subject, replicas.meter(subject.unit), RenderTools(renderer=cache)
            )

        return make_tools, cache

    return subjects, tools_for


class _ServerProcess:
    """`python -m coin_scale.testing.fakeserver` in its own process, as a real server would be (an
    in-process server would compete with the agents for this interpreter's lock)."""

    def __init__(self, *args: str, provider: str = "openai") -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coin_scale.testing.fakeserver", "--provider", provider, *args],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"the fake server did not start: {line!r}")
        self.base_url = line.split()[1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _explain(  # type: ignore[no-untyped-def]
    config: LLMBenchConfig, subjects, tools_for, *, concurrency: int, server_args,
    provider: str = "openai", model: str = "bench-agent", prompt_caching: bool = True,
    stats: dict[str, Any] | None = None, cpu: CPUMeter | None = None,
):  # fmt: skip
    """Explain `subjects` through a fake `provider` server, with a fresh render cache; `stats`,
    when given, gets the gateway pool's image bytes sent and saved and the render cache's hits
    and misses; `cpu`, when given, measures the CPU time of this node's processes meanwhile."""
    from coin_scale.explain.llm import LLMExplainerConfig, explain_subjects, prepare
    from coin_scale.runtime.pools import gateway_pool

    server = _ServerProcess("--policy", "experimenter", *server_args, provider=provider)
    try:
        prepared = prepare(
            LLMExplainerConfig(
                provider=provider,
                model=model,
                base_url=server.base_url,
                requests_per_minute=1e6,
                tokens_per_minute=1e12,
                concurrency=concurrency,
                unit_budget_usd=None,
                sweep_budget_usd=None,
                unit_budget_tokens=None,
                gateway_actors=config.gateway_actors,
                prompt_caching=prompt_caching,
            )  # fmt: skip
        )
        with gateway_pool(prepared, address=config.address) as pool:
            # Actor start-up (and each actor's first SDK client) is not what is measured.
            asyncio.run(_warm(pool, calls=len(pool.actors)))
            pool.ledger()
            sent0, saved0 = pool.image_bytes_sent, pool.image_bytes_saved
            make_tools, cache = tools_for()
            with cpu or contextlib.nullcontext():
                start = time.perf_counter()
                result = explain_subjects(
                    prepared, subjects, make_tools, run_id="bench-llm", gateways=pool,
                    progress=False,
                )  # fmt: skip
                seconds = time.perf_counter() - start
            if stats is not None:
                sent, saved = pool.image_bytes_sent, pool.image_bytes_saved
                stats.update(image_bytes_sent=sent - sent0, image_bytes_saved=saved - saved0)
                stats.update(render_cache_hits=cache.hits, render_cache_misses=cache.misses)
    finally:
        server.stop()
    return result, seconds


COST_MODELS = {
    "openai": "gpt-4.1-mini",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
}
"""The providers' default models (configs/llm.yaml), named so the ledger prices them."""


def _cost(config: LLMBenchConfig, subjects, tools_for) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Tokens and dollars per unit, each provider through its fake server (which bills a repeated
    prefix as that provider's prompt cache does: `testing/fakeserver/prompt_cache.py`), without
    and with the prefix marked for caching. "ledgered before" is what the ledger recorded before
    cached tokens were read from the replies: every input token at the full price."""
    out: dict[str, Any] = {"units": len(subjects)}
    for provider, model in COST_MODELS.items():
        runs = {}
        for caching in (False, True):
            stats: dict[str, Any] = {}
            result, _ = _explain(
                config, subjects, tools_for, concurrency=len(subjects), server_args=("--latency", "0"),
                provider=provider, model=model, prompt_caching=caching, stats=stats,
            )  # fmt: skip
            runs[caching] = _per_unit(result, len(subjects), stats)
        before, after = runs[False], runs[True]
        ledgered = before["input_tokens"]
        out[provider] = {
            "model": model,
            "before": before,
            "after": after,
            "uncached_input_after_over_ledgered_before": _ratio(
                after["uncached_input_tokens"], ledgered
            ),
            "uncached_input_after_over_billed_before": _ratio(
                after["uncached_input_tokens"], before["uncached_input_tokens"]
            ),
            "usd_after_over_ledgered_before": _ratio(after["usd"], before["usd_at_full_price"]),
            "usd_after_over_billed_before": _ratio(after["usd"], before["usd"]),
        }
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _per_unit(result, units: int, stats: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from coin_scale.llm.settings import load_settings

    calls = [c for c in result.calls if c.status == "ok"]
    price = load_settings().price(calls[0].model) if calls else None
    tin = sum(c.input_tokens for c in calls)
    tout = sum(c.output_tokens for c in calls)
    read = sum(c.cached_input_tokens or 0 for c in calls)
    written = sum(c.cache_write_tokens or 0 for c in calls)
    usd = sum(c.cost_usd for c in calls)
    full = price.cost(tin, tout) if price else 0.0
    return {
        "calls": round(len(calls) / units, 2),
        "input_tokens": round(tin / units),
        "uncached_input_tokens": round((tin - read) / units),
        "cached_input_tokens": round(read / units),
        "cache_write_tokens": round(written / units),
        "output_tokens": round(tout / units),
        "usd": round(usd / units, 6),
        "usd_at_full_price": round(full / units, 6),
        "image_kib_sent_to_gateways": round(stats.get("image_bytes_sent", 0) / units / 1024, 1),
        "image_kib_not_resent": round(stats.get("image_bytes_saved", 0) / units / 1024, 1),
        "units_ok": sum(o.status == "ok" for o in result.outcomes),
    }


def _concurrency(config: LLMBenchConfig, subjects, tools_for, batcher) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    # The server's prompt-cache billing is not what this part measures: off, to spare its CPU.
    latency = ("--latency", str(config.latency_s), "--no-prompt-cache")
    one, t_one = _explain(config, subjects, tools_for, concurrency=1, server_args=latency)
    passes, images = batcher.batches, batcher.images
    stats: dict[str, Any] = {}
    many, t_many = _explain(
        config, subjects, tools_for, concurrency=len(subjects), server_args=latency, stats=stats
    )
    passes, images = batcher.batches - passes, batcher.images - images
    # The same with an instant server: what the experiments, SDKs and Ray cost on this machine,
    # and which process spent it.
    cpu = CPUMeter()
    _, t_floor = _explain(
        config,
        subjects,
        tools_for,
        concurrency=len(subjects),
        server_args=("--latency", "0", "--no-prompt-cache"),
        cpu=cpu,
    )
    return {
        "units": len(subjects),
        "latency_s": config.latency_s,
        "calls": len(many.calls),
        "one_at_a_time_s": round(t_one, 2),
        "all_at_once_s": round(t_many, 2),
        "speedup": round(t_one / t_many, 2),
        "all_at_once_instant_server_s": round(t_floor, 2),
        "ok_one_at_a_time": sum(o.status == "ok" for o in one.outcomes),
        "ok_all_at_once": sum(o.status == "ok" for o in many.outcomes),
        "all_at_once_measured_images": images,
        "all_at_once_forward_passes": passes,
        "all_at_once_render_cache_hits": stats["render_cache_hits"],
        "all_at_once_renders": stats["render_cache_hits"] + stats["render_cache_misses"],
        "instant_server_cpu": cpu.report(),
    }


def _faults(config: LLMBenchConfig, subjects, tools_for) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    half = config.fault_rate / 2
    args = ("--latency", str(config.latency_s), "--p-rate-limit", str(half),
            "--p-server-error", str(half), "--retry-after", str(config.retry_after_s),
            "--seed", "7", "--no-prompt-cache")  # fmt: skip
    result, seconds = _explain(
        config, subjects, tools_for, concurrency=len(subjects), server_args=args
    )
    attempts = sum(1 + c.retries for c in result.calls)
    retries = sum(c.retries for c in result.calls)
    return {
        "units": len(subjects),
        "fault_rate": config.fault_rate,
        "calls": len(result.calls),
        "attempts": attempts,
        "retries": retries,
        "failed_attempts_share": round(retries / attempts, 3) if attempts else None,
        "units_ok": sum(o.status == "ok" for o in result.outcomes),
        "units_lost": sum(o.status != "ok" for o in result.outcomes),
        "seconds": round(seconds, 2),
    }
