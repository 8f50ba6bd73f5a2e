"""Scripted policies and the in-process chat: determinism, valid actions, and ground truth recovered
on synthetic units whose preference is known (the fraction of pixels of one colour)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from coin_scale.agent import (
    AgentConfig,
    CallContext,
    ExemplarImage,
    ExperimentTools,
    UnitSubject,
    explain_unit,
    parse_final_text,
)
from coin_scale.llm.messages import ChatRequest, ImagePart, Message, ToolCall, ToolResult, ToolSpec
from coin_scale.testing.agent_policies import (
    ExperimenterPolicy,
    Garbage,
    InvalidThenValid,
    NeverFinishes,
    TextAnswer,
)
from coin_scale.testing.chat import policy_chat, view_from_request
from coin_scale.testing.policy import (
    CallTool,
    ConversationView,
    Reply,
    Scripted,
    SeenToolResult,
)
from unity_pool import vocab
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Scene
from unity_pool.tools import LocalRenderer, RenderTools

RUN = {"run_id": "run-1", "explainer": "local", "llm_model": "scripted"}


class ColourUnit:
    """A synthetic unit: the fraction of pixels within a distance of one named colour."""

    def __init__(self, colour: str) -> None:
        self.rgb = np.array(vocab.COLOR_RGB[colour], dtype=np.float32)

    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        out = []
        for image in images:
            a = np.asarray(image.convert("RGB"), dtype=np.float32)
            # compare chromaticity, so lighting (a multiply) does not move a pixel off its colour
            chroma = a / (a.sum(-1, keepdims=True) + 1e-6)
            target = self.rgb / self.rgb.sum()
            near = (np.abs(chroma - target).sum(-1) < 0.12) & (a.max(-1) > 40)
            out.append(float(near.mean()))
        return out


def _subject(meter) -> UnitSubject:
    results = LocalRenderer().render_many(
        sample_scenes(48, 0, width=64, height=64, fixed={"n_objects": 1})
    )
    acts = meter.measure([Image.open(io.BytesIO(r.data)) for r in results])
    top = sorted(range(len(acts)), key=lambda i: -acts[i])[:8]
    exemplars = tuple(
        ExemplarImage(
            png=results[i].data, activation=acts[i], attributes=dict(results[i].attributes)
        )
        for i in top
    )
    return UnitSubject(model="m", layer="synthetic", unit=0, kind="synthetic", exemplars=exemplars)


def _explain(subject, meter, policy, config=None):
    tools = ExperimentTools(subject, meter, RenderTools())
    return asyncio.run(
        explain_unit(subject, tools, policy_chat(policy), config=config or AgentConfig(), **RUN)
    )


@pytest.mark.parametrize("colour", ["red", "blue", "green"])
def test_experimenter_recovers_the_colour_of_a_synthetic_unit(colour: str) -> None:
    meter = ColourUnit(colour)
    subject = _subject(meter)
    outcome = _explain(subject, meter, ExperimenterPolicy())
    assert outcome.status == "ok", outcome.error
    assert outcome.label is not None and colour in outcome.label.split()
    assert outcome.confidence is not None and outcome.confidence > 0.5
    assert colour in (outcome.description or "")
    assert outcome.evidence and all(e.startswith(("img-", "edit img-")) for e in outcome.evidence)
    edit = json.loads(outcome.experiments[2].arguments_json or "")
    assert list(edit["changes"]) == ["color"]


def test_experimenter_runs_are_identical() -> None:
    meter = ColourUnit("red")
    subject = _subject(meter)
    first = _explain(subject, meter, ExperimenterPolicy())
    second = _explain(subject, meter, ExperimenterPolicy())
    assert first == second


def _view(results: Sequence[tuple[str, object]] = (), **kwargs) -> ConversationView:
    seen = tuple(
        SeenToolResult(name=name, content=json.dumps(content), is_error=name == "error")
        for name, content in results
    )
    fields: dict = dict(
        provider="local", model="scripted", system="s", user_texts=("task",), tool_results=seen,
        rounds=len(seen), tools=("exemplars", "render", "edit", "measure", "finish"),
    )  # fmt: skip
    fields.update(kwargs)
    return ConversationView(**fields)


def test_experimenter_renders_valid_scenes_varying_one_attribute_at_a_time() -> None:
    exemplars = {
        "exemplars": [
            {"id": f"ex-{i}", "activation": 1.0, "attributes": {"color": c, "shape": s, "texture": "dots"}}
            for i, (c, s) in enumerate([("red", "star"), ("red", "ring"), ("pink", "star")])
        ]
    }  # fmt: skip
    policy = ExperimenterPolicy()
    assert policy(_view()) == CallTool(name="exemplars", arguments={"k": 6})
    action = policy(_view([("exemplars", exemplars)]))
    assert isinstance(action, CallTool) and action.name == "render"
    scenes = [Scene.from_dict(spec) for spec in action.arguments["specs"]]
    base = scenes[0].main
    assert (base.color, base.shape, base.texture) == ("red", "star", "dots")
    for scene in scenes[1:]:
        main = scene.main
        changed = [n for n in ("color", "shape", "texture") if getattr(main, n) != getattr(base, n)]
        assert len(changed) == 1
    changed_colours = [s.main.color for s in scenes[1:] if s.main.color != "red"]
    assert len(changed_colours) == 3 and "pink" not in changed_colours
    assert policy(_view([("exemplars", exemplars)])) == action
    without_exemplars = policy(_view(tools=("render", "edit", "measure", "finish")))
    assert isinstance(without_exemplars, CallTool) and without_exemplars.name == "render"


def test_misbehaving_policies_do_what_they_say() -> None:
    views = [_view(), _view([("exemplars", {"exemplars": []})]), _view([("measure", {})] * 3)]
    for view in views:
        action = NeverFinishes()(view)
        assert isinstance(action, CallTool) and action.name in ("exemplars", "measure")
        assert isinstance(Garbage()(view), Reply) and parse_final_text(Garbage()(view).text) is None
    first = InvalidThenValid()(_view())
    assert isinstance(first, CallTool) and first.raw_arguments == "{not json"
    second = InvalidThenValid()(_view([("error", {"error": "x"})]))
    assert isinstance(second, CallTool) and set(second.arguments) == {"specs", "extra"}
    summarised = _view(user_texts=("task", "round 0: exemplars('{not') -> invalid: x"))
    assert InvalidThenValid()(summarised) == second
    third = InvalidThenValid()(_view([("error", {}), ("error", {})]))
    assert third == ExperimenterPolicy()(_view())
    exemplars = {
        "exemplars": [
            {"id": "ex-0", "activation": 1, "attributes": {"color": "blue", "shape": "ring"}}
        ]
    }
    answer = TextAnswer()(_view([("exemplars", exemplars)]))
    assert isinstance(answer, Reply)
    parsed = parse_final_text(answer.text)
    assert parsed is not None and parsed.label == "blue ring"


def test_view_from_request_counts_what_a_server_would_see() -> None:
    image = ImagePart(data=b"png")
    call = ToolCall(id="c0", name="render", arguments={"specs": []})
    result = ToolResult(
        call_id="c0", name="render", content='{"images": []}', images=(image, image)
    )
    error = ToolResult(call_id="c1", name="measure", content='{"error": "x"}', is_error=True)
    request = ChatRequest(
        system="sys",
        messages=(
            Message(role="user", text="task", images=(image,)),
            Message(role="assistant", text="thinking", tool_calls=(call,)),
            Message(role="user", tool_results=(result, error)),
            Message(role="assistant", text="more"),
            Message(role="user", text="nudge"),
        ),
        tools=(ToolSpec(name="render", description="d", parameters={"type": "object"}),),
    )
    view = view_from_request(request, provider="openai", model="gpt")
    assert (view.provider, view.model, view.system) == ("openai", "gpt", "sys")
    assert view.user_texts == ("task", "nudge") and view.rounds == 2 and view.images == 3
    assert view.tools == ("render",)
    assert [(r.name, r.is_error, r.images) for r in view.tool_results] == [
        ("render", False, 2), ("measure", True, 0),
    ]  # fmt: skip
    assert view.tool_results[0].json() == {"images": []}


@pytest.mark.parametrize(
    ("action", "arguments"),
    [
        (CallTool(name="measure", arguments={"images": ["ex-0"]}), {"images": ["ex-0"]}),
        (CallTool(name="measure", raw_arguments="{not json"), None),
        (CallTool(name="measure", raw_arguments="[1, 2]"), None),
        (CallTool(name="measure", raw_arguments='{"images": []}'), {"images": []}),
    ],
)
def test_policy_chat_answers_with_the_action(action: CallTool, arguments) -> None:
    chat = policy_chat(Scripted((action,)), usd_per_million_input=2.0, usd_per_million_output=8.0)
    request = ChatRequest(system="s", messages=(Message(role="user", text="task"),))
    result = asyncio.run(chat(request, CallContext(layer="l", unit=7, round=2)))
    (call,) = result.response.tool_calls
    assert call.id == "call-7-2" and call.name == "measure" and call.arguments == arguments
    expected_raw = (
        action.raw_arguments if action.raw_arguments is not None else json.dumps(arguments)
    )
    assert call.raw_arguments == expected_raw
    usage = result.response.usage
    assert usage.input_tokens == request.estimate_input_tokens() and usage.output_tokens >= 1
    assert result.cost_usd == pytest.approx(
        (2 * usage.input_tokens + 8 * usage.output_tokens) / 1e6
    )
    reply = asyncio.run(policy_chat(Garbage())(request, CallContext(layer="l", unit=7, round=0)))
    assert reply.response.tool_calls == () and reply.response.text == Garbage().text
