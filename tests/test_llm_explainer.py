"""Many units explained at once through the Ray gateway, the official SDKs and local fake
servers: faults and misbehaving models end as stored statuses, never as a lost sweep."""

from __future__ import annotations

import pytest

from coin_scale.explain.llm import LLMExplainerConfig, explain_subjects, prepare
from coin_scale.runtime.pools import gateway_pool
from coin_scale.testing.agent_policies import (
    ExperimenterPolicy,
    Garbage,
    InvalidThenValid,
    NeverFinishes,
)
from coin_scale.testing.fakeserver import FakeProviderServer, Faults
from tests.test_agent_loop import Redness, _subject
from unity_pool.tools import LocalRenderer, RenderTools

pytestmark = pytest.mark.slow
KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}


@pytest.fixture(scope="module")
def subjects():
    return [_subject(Redness(), unit=u) for u in range(3)]


def _explain(provider, policy, subjects, monkeypatch, faults=None, **config):  # type: ignore[no-untyped-def]
    from coin_scale.agent import ExperimentTools

    monkeypatch.setenv(KEYS[provider], "test-key-0123456789")
    with FakeProviderServer(provider, policy, faults=faults) as server:
        prepared = prepare(
            LLMExplainerConfig(
                provider=provider, model="fake-model", base_url=server.base_url,
                requests_per_minute=60000, tokens_per_minute=1e12, **config,
            )  # fmt: skip
        )
        with gateway_pool(prepared, address=None) as gateways:
            result = explain_subjects(
                prepared, subjects,
                lambda s: ExperimentTools(s, Redness(), RenderTools(renderer=LocalRenderer())),
                run_id="t", gateways=gateways, progress=False,
            )  # fmt: skip
        return result, server.log


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_invalid_tool_arguments_are_answered_and_the_agent_recovers(
    provider, subjects, ray_cluster, monkeypatch
):
    result, _ = _explain(provider, InvalidThenValid(), subjects[:1], monkeypatch)
    (outcome,) = result.outcomes
    assert outcome.status == "ok" and "red" in (outcome.label or "")
    statuses = [row.status for row in outcome.experiments]
    # Gemini cannot carry non-JSON arguments: only the schema violation reaches the tools.
    assert statuses.count("invalid") == (1 if provider == "gemini" else 2)
    assert outcome.invalid_calls == statuses.count("invalid") and statuses[-1] == "finished"


def test_a_model_that_never_finishes_stops_at_the_round_cap(subjects, ray_cluster, monkeypatch):
    result, log = _explain("openai", NeverFinishes(), subjects[:2], monkeypatch, max_rounds=4)
    assert [o.status for o in result.outcomes] == ["failed", "failed"]
    assert all("no finish within 4 rounds" in (o.error or "") for o in result.outcomes)
    assert len(log) == 8 and len(result.calls) == 8


def test_an_unparseable_final_answer_is_a_parse_failure(subjects, ray_cluster, monkeypatch):
    result, _ = _explain("anthropic", Garbage(), subjects[:1], monkeypatch, max_rounds=3)
    (outcome,) = result.outcomes
    assert outcome.status == "parse_failure" and outcome.experiments[-1].status == "parse_failure"


def test_malformed_bodies_and_server_errors_are_retried_and_no_unit_is_lost(
    subjects, ray_cluster, monkeypatch
):
    faults = Faults(
        script=("malformed", "server_error", "rate_limit"), p_malformed=0.08, p_server_error=0.08,
        p_rate_limit=0.04, retry_after_s=0.05, latency_s=0.02,
    )  # fmt: skip
    # 20% of attempts fail; 8 attempts make a call that fails them all (0.2**8) negligible.
    result, log = _explain(
        "gemini", ExperimenterPolicy(), subjects, monkeypatch, faults=faults, max_attempts=8
    )
    assert [o.status for o in result.outcomes] == ["ok"] * 3
    assert {r.fault for r in log} >= {"malformed", "server_error", "rate_limit"}
    assert sum(c.retries for c in result.calls) == sum(1 for r in log if r.fault)
    assert {c.status for c in result.calls} == {"ok"}


def test_an_exhausted_spend_limit_fails_units_without_retrying(subjects, ray_cluster, monkeypatch):
    result, log = _explain(
        "openai", ExperimenterPolicy(), subjects[:2], monkeypatch, faults=Faults(spend_limit=True)
    )
    assert [o.status for o in result.outcomes] == ["failed", "failed"]
    assert all("spend_limit" in (o.error or "") for o in result.outcomes)
    assert len(log) == 2 and {c.error_kind for c in result.calls} == {"spend_limit"}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_llm_agent_can_ask_for_feature_visualizations(provider, ray_cluster, monkeypatch):
    """`visualize(n)` is offered through each SDK; its images and activations reach the model."""
    from coin_scale.agent import ExperimentTools, TorchUnitMeter, UnitSubject
    from coin_scale.agent.visualizer import TorchUnitVisualizer
    from coin_scale.testing.fakeserver import CallTool, Scripted
    from tests.test_agent_tools import PREPROCESS, UNIT, _model

    model = _model()
    finish = {"label": "red blobs", "description": "what its visualizations show", "confidence": 0.4,
              "evidence": []}  # fmt: skip
    policy = Scripted((CallTool(name="visualize", arguments={"n": 2}),
                       CallTool(name="finish", arguments=finish)))  # fmt: skip
    monkeypatch.setenv(KEYS[provider], "test-key-0123456789")
    with FakeProviderServer(provider, policy) as server:
        prepared = prepare(LLMExplainerConfig(
            provider=provider, model="fake-model", base_url=server.base_url,
            requests_per_minute=60000, tokens_per_minute=1e12,
        ))  # fmt: skip
        with gateway_pool(prepared, address=None) as gateways:
            result = explain_subjects(
                prepared, [UnitSubject(model="probe_cnn", layer="layer4", unit=UNIT)],
                lambda s: ExperimentTools(
                    s, TorchUnitMeter(model, PREPROCESS, "layer4", "nchw", s.unit),
                    RenderTools(renderer=LocalRenderer()),
                    visualizer=TorchUnitVisualizer(model, PREPROCESS, "layer4", "nchw", s.unit, steps=16),
                ),
                run_id="viz", gateways=gateways, progress=False,
            )  # fmt: skip
        log = server.log
    (outcome,) = result.outcomes
    assert outcome.status == "ok" and outcome.label == "red blobs"
    assert [(r.tool, r.status) for r in outcome.experiments] == [("visualize", "ok"), ("finish", "finished")]
    assert log[0].view is not None and "visualize" in log[0].view.tools
    seen = log[1].view.tool_results[-1]
    assert seen.name == "visualize" and seen.images == 2
    assert [e["source"] for e in seen.json()["images"]] == ["visualization"] * 2
