"""The agents' describe and summarize tools without Ray: the request the describe model gets,
its reply parsed into one caption per image, and every way it can fail reaching the agent as a
tool error it can read."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from PIL import Image

from coin_scale.agent.describe import (
    DESCRIBE_SIZE,
    DescribeFailed,
    GatewayDescriber,
    describe_request,
    parse_captions,
)
from coin_scale.agent.subject import UnitSubject
from coin_scale.agent.tools import ExperimentTools
from coin_scale.llm.messages import ToolCall
from unity_pool.tools import RenderTools


class ScriptedComplete:
    """`Gateways.complete` answering with fixed texts; records the requests."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.requests: list = []

    async def __call__(self, request, meta):  # noqa: ANN001, ANN204
        self.requests.append((request, meta))
        return SimpleNamespace(response=SimpleNamespace(text=self.texts.pop(0)))


class ZeroMeter:
    def measure(self, images):  # noqa: ANN001, ANN201
        return [0.0 for _ in images]


def _images(n: int, side: int = 600) -> list[Image.Image]:
    return [Image.new("RGB", (side, side // 2), (40 * i, 10, 10)) for i in range(n)]


def test_the_request_carries_small_images_and_asks_for_numbered_lines() -> None:
    request = describe_request(_images(3))
    (message,) = request.messages
    assert len(message.images) == 3 and "exactly 3 lines" in message.text and not request.tools
    for part in message.images:
        with Image.open(io.BytesIO(part.data)) as im:
            assert max(im.size) == DESCRIBE_SIZE
    assert "in common" in describe_request(_images(2), summarize=True).messages[0].text


def test_captions_are_parsed_in_order_whatever_the_numbering_style() -> None:
    text = "Here you go:\n2) a red car\n1: a dog on grass\nImage 3 - an empty room\n1: again"
    assert parse_captions(text, 3) == ["a dog on grass", "a red car", "an empty room"]
    with pytest.raises(DescribeFailed, match=r"no caption for image\(s\) \[2\] of 2"):
        parse_captions("1: only one", 2)


def test_the_tools_offer_describe_and_summarize_and_report_failures() -> None:
    complete = ScriptedComplete(
        "1: a cat\n2: a dog", "Both are pets.", "no numbers at all", "1: x\n2: y"
    )
    describer = GatewayDescriber(complete, "meta-of-unit-4", model="gpt-4o-mini")
    exemplar = io.BytesIO()
    Image.new("RGB", (32, 32)).save(exemplar, format="PNG")
    from coin_scale.agent.subject import ExemplarImage

    subject = UnitSubject(model="m", layer="l", unit=4, exemplars=(
        ExemplarImage(png=exemplar.getvalue(), activation=1.0),
        ExemplarImage(png=exemplar.getvalue(), activation=0.5),
    ))  # fmt: skip
    tools = ExperimentTools(subject, ZeroMeter(), RenderTools(), describer=describer)
    specs = {s.name: s for s in tools.specs()}
    assert "(gpt-4o-mini)" in specs["describe"].description
    assert "summarize_images" in specs["summarize"].description

    def call(name: str, ids: list[str]):  # noqa: ANN202
        return tools.call(ToolCall(id="c", name=name, arguments={"images": ids},
                                   raw_arguments=json.dumps({"images": ids})))  # fmt: skip

    described = call("describe", ["ex-0", "ex-1"])
    assert described.status == "ok"
    assert [d["text"] for d in json.loads(described.result.content)["descriptions"]] == [
        "a cat", "a dog",
    ]  # fmt: skip
    summarized = call("summarize", ["ex-0", "ex-1"])
    assert json.loads(summarized.result.content)["summary"] == "Both are pets."
    failed = call("describe", ["ex-0", "ex-1"])
    assert failed.status == "error" and "no caption for image(s)" in failed.result.content
    assert [meta for _, meta in complete.requests] == ["meta-of-unit-4"] * 3
    # A captioner without summarize offers only describe.
    only = ExperimentTools(subject, ZeroMeter(), RenderTools(),
                           describer=SimpleNamespace(describe=lambda images: ["x"] * len(images)))  # fmt: skip
    names = [s.name for s in only.specs()]
    assert "describe" in names and "summarize" not in names


class PricedComplete(ScriptedComplete):
    """Like `ScriptedComplete`, each reply billed 1,000 tokens and $0.25 (none when `cached`)."""

    def __init__(self, *texts: str, cached: bool = False) -> None:
        super().__init__(*texts)
        self.cached = cached

    async def __call__(self, request, meta):  # noqa: ANN001, ANN204
        self.requests.append((request, meta))
        usage = SimpleNamespace(total=1000)
        return SimpleNamespace(
            response=SimpleNamespace(text=self.texts.pop(0), usage=usage),
            cost_usd=0.0 if self.cached else 0.25, cached=self.cached,
        )  # fmt: skip


def test_describe_calls_are_charged_to_the_units_budget() -> None:
    import asyncio

    from coin_scale.agent.budget import SweepBudget
    from coin_scale.agent.loop import AgentConfig, explain_unit
    from coin_scale.agent.subject import ExemplarImage
    from coin_scale.testing.chat import policy_chat
    from coin_scale.testing.policy import CallTool, Scripted

    exemplar = io.BytesIO()
    Image.new("RGB", (32, 32)).save(exemplar, format="PNG")
    subject = UnitSubject(model="m", layer="l", unit=4, exemplars=(
        ExemplarImage(png=exemplar.getvalue(), activation=1.0),
    ))  # fmt: skip
    describe = CallTool(name="describe", arguments={"images": ["ex-0"]})
    policy = Scripted((describe, describe, describe, describe))

    def run(max_usd: float, *, cached: bool = False):  # noqa: ANN202
        describer = GatewayDescriber(
            PricedComplete(*["1: a cat"] * 4, cached=cached), "meta", model="cheap"
        )
        tools = ExperimentTools(subject, ZeroMeter(), RenderTools(), describer=describer)
        sweep = SweepBudget()
        outcome = asyncio.run(explain_unit(
            subject, tools, policy_chat(policy), config=AgentConfig(max_rounds=4, max_usd=max_usd),
            sweep_budget=sweep, run_id="r", explainer="openai", llm_model="m",
        ))  # fmt: skip
        return outcome, sweep

    # $0.25 a describe call against a $0.6 unit budget: the third round is refused, cleanly.
    outcome, sweep = run(0.6)
    assert outcome.status == "failed" and outcome.error and "budget" in outcome.error
    assert outcome.cost_usd == pytest.approx(0.5) and sweep.usd == pytest.approx(0.5)
    # Answered from the request cache: nothing paid, nothing charged.
    outcome, sweep = run(0.6, cached=True)
    assert outcome.error and "budget" not in outcome.error and sweep.usd == 0.0
