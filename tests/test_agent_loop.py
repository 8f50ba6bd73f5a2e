"""The agent loop driven in process by scripted policies: trajectories, round cap, parse failures,
provider errors, budgets and context trimming. No Ray, no HTTP."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from coin_scale.agent import (
    AgentConfig,
    CallContext,
    ChatResult,
    ExemplarImage,
    ExperimentTools,
    SweepBudget,
    TorchUnitMeter,
    UnitSubject,
    explain_unit,
    parse_final_text,
)
from coin_scale.agent.context import (
    SUMMARY_HEADER,
    RoundRecord,
    build_request,
    fit,
    png_size,
)
from coin_scale.agent.prompts import FINAL_ROUND_NOTICE, NUDGE, first_message, system_prompt
from coin_scale.llm.messages import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ProviderError,
    ToolCall,
    ToolResult,
    Usage,
)
from coin_scale.models.preprocess import Preprocess
from coin_scale.models.probe_cnn import probe_cnn
from coin_scale.storage.schemas import experiments
from coin_scale.testing.agent_policies import (
    ExperimenterPolicy,
    Garbage,
    InvalidThenValid,
    NeverFinishes,
    TextAnswer,
)
from coin_scale.testing.chat import policy_chat
from coin_scale.testing.policy import CallTool, Scripted
from unity_pool.sampling import sample_scenes
from unity_pool.tools import LocalRenderer, RenderTools

RUN = {"run_id": "run-1", "explainer": "local", "llm_model": "scripted"}


class Redness:
    """A synthetic unit with known ground truth: the fraction of strongly red pixels."""

    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        out = []
        for image in images:
            a = np.asarray(image.convert("RGB"), dtype=np.int32)
            red = (a[..., 0] > 90) & (a[..., 0] > 2 * np.maximum(a[..., 1], a[..., 2]))
            out.append(float(red.mean()))
        return out


def _subject(meter, *, kind: str = "synthetic", unit: int = 0) -> UnitSubject:
    """The top 8 of 32 rendered single-object scenes for the meter."""
    results = LocalRenderer().render_many(
        sample_scenes(32, 0, width=64, height=64, fixed={"n_objects": 1})
    )
    acts = meter.measure([Image.open(io.BytesIO(r.data)) for r in results])
    top = sorted(range(len(acts)), key=lambda i: -acts[i])[:8]
    exemplars = tuple(
        ExemplarImage(
            png=results[i].data, activation=acts[i], attributes=dict(results[i].attributes)
        )
        for i in top
    )
    return UnitSubject(model="m", layer="layer4", unit=unit, kind=kind, exemplars=exemplars)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def red_subject() -> UnitSubject:
    return _subject(Redness())


def _run(subject, policy, *, meter=None, config=None, sweep=None, chat=None, image_size=128):
    tools = ExperimentTools(subject, meter or Redness(), RenderTools(), image_size=image_size)
    return asyncio.run(
        explain_unit(
            subject,
            tools,
            chat or policy_chat(policy),
            config=config or AgentConfig(),
            sweep_budget=sweep,
            **RUN,
        )
    )


def _trajectory(outcome) -> list[tuple[int, int, str | None, str]]:
    return [(r.round, r.step, r.tool, r.status) for r in outcome.experiments]


def test_experimenter_explains_a_cnn_unit_with_a_full_trajectory() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = probe_cnn(num_classes=4, width=16).eval()
    meter = TorchUnitMeter(model, Preprocess(resize=64, crop=64), "layer4", "nchw", 3)
    subject = _subject(meter, kind="neuron", unit=3)
    outcome = _run(subject, ExperimenterPolicy(), meter=meter)
    assert outcome.status == "ok" and outcome.error is None
    assert outcome.label and outcome.description and 0.0 <= outcome.confidence <= 1.0
    assert any(e.startswith("img-") for e in outcome.evidence)
    assert _trajectory(outcome) == [
        (0, 0, "exemplars", "ok"),
        (1, 0, "render", "ok"),
        (2, 0, "edit", "ok"),
        (3, 0, "finish", "finished"),
    ]
    assert outcome.rounds == 4 and outcome.invalid_calls == 0
    rows = outcome.experiments
    assert {(r.run_id, r.model, r.layer, r.unit, r.kind) for r in rows} == {
        ("run-1", "m", "layer4", 3, "neuron")
    }
    assert json.loads(rows[0].arguments_json or "") == {"k": 6}
    assert "img-000010" in (rows[2].result_summary or "")
    assert outcome.input_tokens == sum(r.input_tokens for r in rows) > 0
    assert outcome.output_tokens == sum(r.output_tokens for r in rows) > 0
    assert experiments.from_arrow(experiments.to_arrow(rows)) == rows


def test_round_cap_ends_failed_with_no_finish(red_subject) -> None:
    outcome = _run(red_subject, NeverFinishes(), config=AgentConfig(max_rounds=4))
    assert outcome.status == "failed" and outcome.error == "no finish within 4 rounds"
    assert outcome.rounds == 4 and outcome.label is None
    assert _trajectory(outcome)[-1] == (3, 1, None, "failed")
    assert [r.status for r in outcome.experiments[:-1]] == ["ok"] * 4


def test_garbage_final_answer_is_a_parse_failure(red_subject) -> None:
    outcome = _run(red_subject, Garbage(), config=AgentConfig(max_rounds=3))
    assert outcome.status == "parse_failure" and outcome.label is None
    assert "did not parse" in (outcome.error or "")
    assert _trajectory(outcome) == [
        (0, 0, None, "no_tool"),
        (1, 0, None, "no_tool"),
        (2, 0, None, "parse_failure"),
    ]


def test_text_answer_counts_as_the_finish(red_subject) -> None:
    outcome = _run(red_subject, TextAnswer())
    assert outcome.status == "ok" and outcome.label and "red" in outcome.label
    assert outcome.confidence == 0.5 and outcome.evidence == ()
    assert _trajectory(outcome) == [(0, 0, "exemplars", "ok"), (1, 0, None, "finished")]


def test_invalid_calls_are_answered_counted_and_recovered_from(red_subject) -> None:
    outcome = _run(red_subject, InvalidThenValid())
    assert outcome.status == "ok" and outcome.invalid_calls == 2
    assert [r.status for r in outcome.experiments] == [
        "invalid", "invalid", "ok", "ok", "ok", "finished",
    ]  # fmt: skip
    assert outcome.experiments[0].arguments_json == "{not json"
    assert "not a JSON object" in (outcome.experiments[0].result_summary or "")


def test_a_provider_error_fails_the_unit_without_raising(red_subject) -> None:
    calls = []

    async def chat(request: ChatRequest, context: CallContext) -> ChatResult:
        calls.append(context)
        if context.round == 1:
            raise ProviderError("rate_limit", "slow down", provider="openai", status=429)
        return await policy_chat(ExperimenterPolicy())(request, context)

    outcome = _run(red_subject, None, chat=chat)
    assert outcome.status == "failed" and outcome.rounds == 1
    assert "ProviderError" in (outcome.error or "") and "rate_limit" in (outcome.error or "")
    assert _trajectory(outcome) == [(0, 0, "exemplars", "ok"), (1, 0, None, "failed")]
    assert outcome.experiments[-1].input_tokens == 0
    assert [c.round for c in calls] == [0, 1] and calls[0].layer == "layer4"


def test_a_crashing_tool_fails_the_unit_without_raising(red_subject) -> None:
    class Broken:
        def measure(self, images):
            raise RuntimeError("CUDA out of memory")

    outcome = _run(red_subject, ExperimenterPolicy(), meter=Broken())
    assert outcome.status == "failed" and outcome.error == "RuntimeError: CUDA out of memory"
    assert _trajectory(outcome) == [(0, 0, "exemplars", "ok"), (1, 0, "render", "failed")]


def test_a_valid_finish_ends_the_reply(red_subject) -> None:
    finish = {"label": "red", "description": "red things", "confidence": 0.9, "evidence": []}

    async def chat(request: ChatRequest, context: CallContext) -> ChatResult:
        calls = (
            ToolCall(id="a", name="exemplars", arguments={"k": 2}),
            ToolCall(id="b", name="finish", arguments=finish),
            ToolCall(id="c", name="measure", arguments={"images": ["ex-0"]}),
        )
        return ChatResult(response=ChatResponse(text="", tool_calls=calls), cost_usd=0.0)

    outcome = _run(red_subject, None, chat=chat)
    assert outcome.status == "ok" and outcome.label == "red" and outcome.confidence == 0.9
    assert _trajectory(outcome) == [(0, 0, "exemplars", "ok"), (0, 1, "finish", "finished")]


def test_an_invalid_finish_in_the_last_round_is_a_parse_failure(red_subject) -> None:
    policy = Scripted((CallTool(name="finish", arguments={"label": "red", "confidence": 2}),))
    outcome = _run(red_subject, policy, config=AgentConfig(max_rounds=2))
    assert outcome.status == "parse_failure" and outcome.invalid_calls == 2
    assert "the final finish call was invalid" in (outcome.error or "")
    assert _trajectory(outcome)[-1] == (1, 1, None, "parse_failure")


# --- budgets -------------------------------------------------------------------------------------


def test_the_unit_token_budget_stops_work(red_subject) -> None:
    reference = _run(red_subject, ExperimenterPolicy())
    first = reference.experiments[0].input_tokens
    config = AgentConfig(max_tokens=first + 1024 + 10)
    outcome = _run(red_subject, ExperimenterPolicy(), config=config)
    assert outcome.status == "failed" and outcome.rounds == 1
    assert "unit token budget" in (outcome.error or "")
    assert _trajectory(outcome)[-1] == (1, 0, None, "failed")


PRICE = {"usd_per_million_input": 10.0, "usd_per_million_output": 10.0}


def test_the_sweep_dollar_budget_is_shared_by_units(red_subject) -> None:
    reference = _run(red_subject, None, chat=policy_chat(ExperimenterPolicy(), **PRICE))
    assert reference.status == "ok" and reference.cost_usd > 0
    sweep = SweepBudget(max_usd=reference.cost_usd * 1.3)
    config = AgentConfig(usd_per_million_tokens=10.0)
    first = _run(
        red_subject,
        None,
        chat=policy_chat(ExperimenterPolicy(), **PRICE),
        sweep=sweep,
        config=config,
    )
    second = _run(
        red_subject,
        None,
        chat=policy_chat(ExperimenterPolicy(), **PRICE),
        sweep=sweep,
        config=config,
    )
    assert first.status == "ok" and first.cost_usd == pytest.approx(reference.cost_usd)
    assert second.status == "failed" and "sweep dollar budget" in (second.error or "")
    assert 1 <= second.rounds < 4
    assert sweep.usd == pytest.approx(first.cost_usd + second.cost_usd)
    assert sweep.usd <= sweep.max_usd  # type: ignore[operator]
    # the command then tells the user how to finish: a larger budget, the cache pays the rest
    from coin_scale.agent.budget import budget_hint

    hint = budget_hint([first.error, second.error])
    assert hint is not None and hint.startswith("1 unit(s) stopped at a budget") and "cache" in hint
    assert budget_hint([first.error, "timed out"]) is None


def test_concurrent_units_never_overrun_the_sweep_budget(red_subject) -> None:
    reference = _run(red_subject, None, chat=policy_chat(ExperimenterPolicy(), **PRICE))
    sweep = SweepBudget(max_usd=reference.cost_usd * 1.5)
    config = AgentConfig(usd_per_million_tokens=10.0)

    async def both():
        tasks = []
        for unit in (0, 1, 2):
            subject = replace(red_subject, unit=unit)
            tools = ExperimentTools(subject, Redness(), RenderTools())
            chat = policy_chat(ExperimenterPolicy(), **PRICE)
            tasks.append(
                explain_unit(subject, tools, chat, config=config, sweep_budget=sweep, **RUN)
            )
        return await asyncio.gather(*tasks)

    outcomes = asyncio.run(both())
    assert sweep.usd <= sweep.max_usd  # type: ignore[operator]
    assert any("sweep dollar budget" in (o.error or "") for o in outcomes)
    assert sweep.usd == pytest.approx(sum(o.cost_usd for o in outcomes))


def test_cached_replies_cost_nothing(red_subject) -> None:
    inner = policy_chat(ExperimenterPolicy(), **PRICE)

    async def cached(request: ChatRequest, context: CallContext) -> ChatResult:
        return replace(await inner(request, context), cached=True)

    sweep = SweepBudget(max_usd=1e-6)
    outcome = _run(red_subject, None, chat=cached, sweep=sweep)
    assert outcome.status == "ok" and outcome.cost_usd == 0.0 and sweep.usd == 0.0
    assert all(r.cost_usd == 0.0 for r in outcome.experiments) and outcome.input_tokens > 0


# --- context -------------------------------------------------------------------------------------


def _recording(policy, requests: list[ChatRequest]):
    inner = policy_chat(policy)

    async def chat(request: ChatRequest, context: CallContext) -> ChatResult:
        requests.append(request)
        return await inner(request, context)

    return chat


def _image_sizes(request: ChatRequest) -> list[tuple[int, int]]:
    parts = [p for m in request.messages for p in m.images]
    parts += [p for m in request.messages for r in m.tool_results for p in r.images]
    return [Image.open(io.BytesIO(p.data)).size for p in parts]


def test_context_keeps_system_first_message_summary_and_last_rounds(red_subject) -> None:
    requests: list[ChatRequest] = []
    config = AgentConfig(max_rounds=6, keep_last_rounds=2, image_size=40)
    outcome = _run(
        red_subject, NeverFinishes(), chat=_recording(NeverFinishes(), requests), config=config
    )
    assert outcome.status == "failed" and len(requests) == 6
    first = requests[0].messages[0]
    assert [m.role for m in requests[0].messages] == ["user"]
    assert len(first.images) == 8 and "ex-0: activation" in first.text
    for i, request in enumerate(requests):
        assert request.system == requests[0].system and request.messages[0] == first
        assert request.tools == requests[0].tools and request.max_tokens == 1024
        verbatim = min(i, 2)
        assert len(request.messages) == 1 + (1 if i > 2 else 0) + 2 * verbatim
        assert all(max(size) <= 40 for size in _image_sizes(request))
    last = requests[-1]
    summary = last.messages[1]
    assert summary.role == "user" and not summary.images and not summary.tool_results
    assert summary.text.splitlines()[0] == SUMMARY_HEADER
    assert [line.split(":")[0] for line in summary.text.splitlines()[1:]] == [
        "round 0", "round 1", "round 2",
    ]  # fmt: skip
    assert 'exemplars({"k":1}) -> 1 exemplars: ex-0=' in summary.text
    assert [m.role for m in last.messages[2:]] == ["assistant", "user"] * 2
    assert last.messages[2].tool_calls[0].id == "call-0-3"
    assert last.messages[3].tool_results[0].call_id == "call-0-3"
    assert last.messages[-1].text == FINAL_ROUND_NOTICE
    assert FINAL_ROUND_NOTICE not in requests[-2].messages[-1].text


def _record(r: int, *, images: int = 1) -> RoundRecord:
    part = ImagePart(data=b"png")
    call = ToolCall(id=f"c{r}", name="measure", arguments={"images": ["ex-0"]})
    result = ToolResult(call_id=f"c{r}", name="measure", content="{}", images=(part,) * images)
    return RoundRecord(
        round=r,
        assistant=Message(role="assistant", tool_calls=(call,)),
        reply=Message(role="user", tool_results=(result,)),
        summary=(f"measure -> step of round {r}",),
    )


def test_fit_reads_a_pngs_size_from_its_header_and_downscales_only_larger_images() -> None:
    def png(w: int, h: int, mode: str = "RGB") -> bytes:
        buffer = io.BytesIO()
        Image.new(mode, (w, h), "red").save(buffer, format="PNG")
        return buffer.getvalue()

    assert png_size(png(96, 40)) == (96, 40) and png_size(b"GIF89a not a png") is None
    small = ImagePart(data=png(96, 40))
    assert fit(small, 128) is small and fit(ImagePart(data=png(30, 20, "L")), 30).data == png(
        30, 20, "L"
    )
    big = fit(ImagePart(data=png(300, 150)), 128)
    assert png_size(big.data) == (128, 64)
    jpeg = io.BytesIO()
    Image.new("RGB", (200, 100), "blue").save(jpeg, format="JPEG")
    assert png_size(fit(ImagePart(data=jpeg.getvalue(), media_type="image/jpeg"), 50).data) == (
        50, 25
    )


def test_build_request_trims_to_the_last_rounds() -> None:
    first = Message(role="user", text="task", images=(ImagePart(data=b"x"),))
    kwargs = dict(system="sys", first=first, tools=(), max_tokens=10, temperature=0.0)
    short = build_request(rounds=[_record(0), _record(1)], keep_last_rounds=3, **kwargs)  # type: ignore[arg-type]
    assert len(short.messages) == 5 and short.messages[0] == first
    rounds = [_record(r) for r in range(5)]
    trimmed = build_request(rounds=rounds, keep_last_rounds=2, notice="last!", **kwargs)  # type: ignore[arg-type]
    assert trimmed.system == "sys" and trimmed.messages[0] == first
    assert trimmed.messages[1].text == "\n".join(
        [SUMMARY_HEADER] + [f"round {r}: measure -> step of round {r}" for r in range(3)]
    )
    assert trimmed.messages[2:] == (
        rounds[3].assistant, rounds[3].reply, rounds[4].assistant, replace(rounds[4].reply, text="last!"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="keep_last_rounds"):
        build_request(rounds=rounds, keep_last_rounds=0, **kwargs)  # type: ignore[arg-type]


def test_a_text_reply_is_nudged_toward_finish(red_subject) -> None:
    requests: list[ChatRequest] = []
    _run(red_subject, None, chat=_recording(Garbage(), requests), config=AgentConfig(max_rounds=2))
    assert requests[1].messages[-2] == Message(role="assistant", text=Garbage().text)
    assert requests[1].messages[-1].text == f"{NUDGE}\n\n{FINAL_ROUND_NOTICE}"


# --- final answers as text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ('```json\n{"label": "red star", "description": "d", "confidence": 0.7}\n```', "red star"),
        (
            'Final: {"label": "fur", "description": "d", "confidence": 1, "evidence": ["a"]} ok',
            "fur",
        ),
        ('{"note": {"x": 1}} then {"label": "dots", "description": "d", "confidence": 0}', "dots"),
        ('```\n{"label": "sky", "description": "d", "confidence": 0.2}\n```', "sky"),
        ('{"label": "red", "description": "d", "confidence": 1.5}', None),
        ('{"label": "red", "confidence": 0.5}', None),
        ('{"label": "red", "description": "d", "confidence": "high"}', None),
        ("no json here {", None),
        ("", None),
    ],
)
def test_parse_final_text(text: str, label: str | None) -> None:
    answer = parse_final_text(text)
    assert (answer.label if answer else None) == label


def test_config_rejects_bad_values() -> None:
    for bad in ({"max_rounds": 0}, {"keep_last_rounds": 0}, {"image_size": 4}, {"temperature": -1}):
        with pytest.raises(ValueError):
            AgentConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tokens"):
        SweepBudget(max_tokens=0)


def test_usage_is_recorded_per_round(red_subject) -> None:
    async def chat(request: ChatRequest, context: CallContext) -> ChatResult:
        finish = {"label": "red", "description": "d", "confidence": 0.5, "evidence": []}
        name, args = ("measure", {"images": ["ex-0"]}) if context.round == 0 else ("finish", finish)
        call = ToolCall(id=f"c{context.round}", name=name, arguments=args)
        usage = Usage(input_tokens=100 * (context.round + 1), output_tokens=7)
        response = ChatResponse(text="", tool_calls=(call,), usage=usage)
        return ChatResult(response=response, cost_usd=1e-4 * (context.round + 1))

    outcome = _run(red_subject, None, chat=chat)
    assert [(r.input_tokens, r.output_tokens, r.cost_usd) for r in outcome.experiments] == [
        (100, 7, 1e-4), (200, 7, 2e-4),
    ]  # fmt: skip
    assert (outcome.input_tokens, outcome.output_tokens) == (300, 14)
    assert outcome.cost_usd == pytest.approx(3e-4)


# --- prompts -------------------------------------------------------------------------------------


def test_first_message_lists_the_exemplars_exactly() -> None:
    png = (
        LocalRenderer()
        .render_many(
            [
                {
                    "version": 1,
                    "objects": [{"shape": "star", "color": "red"}],
                    "width": 300,
                    "height": 200,
                }
            ]
        )[0]
        .data
    )
    subject = UnitSubject(
        model="resnet18",
        layer="layer4",
        unit=7,
        exemplars=(
            ExemplarImage(png=png, activation=3.25, attributes={"shape": "star", "color": "red"}),
            ExemplarImage(png=png, activation=1.0, label="tabby"),
            ExemplarImage(png=png, activation=0.5),
        ),
    )
    message = first_message(subject, n=2, image_size=50)
    assert message.role == "user" and message.text == (
        "Explain unit 7 of layer layer4 of resnet18.\n\n"
        "Its top 2 exemplars are attached in this order:\n"
        "ex-0: activation 3.25; attributes shape=star, color=red\n"
        "ex-1: activation 1; label tabby\n\n"
        "Start experimenting; call finish when the evidence supports a label."
    )
    assert [Image.open(io.BytesIO(p.data)).size for p in message.images] == [(50, 33)] * 2
    bare = first_message(replace(subject, exemplars=()), n=8, image_size=50)
    assert not bare.images and "no exemplars" in bare.text


def test_system_prompt_names_the_kind_tools_and_limits(red_subject) -> None:
    tools = ExperimentTools(red_subject, Redness(), RenderTools())
    text = system_prompt(replace(red_subject, kind="sae", unit=12), tools.specs(), max_rounds=5)
    assert "explain what one sparse-autoencoder feature of a vision model" in text
    names = ", ".join(spec.name for spec in tools.specs())
    assert f"Tools (what each takes is in its definition): {names}.\n" in text
    assert "at most 5 replies" in text and "at most 80 characters" in text
    assert "{" not in text and "}" not in text
    # The same for every unit (the prompt caches share it); the first message names the unit.
    other = system_prompt(replace(red_subject, kind="sae", unit=13), tools.specs(), max_rounds=5)
    assert other == text and "12" not in text
    assert "sparse-autoencoder feature 12 of layer" in first_message(
        replace(red_subject, kind="sae", unit=12), n=2, image_size=32
    ).text
