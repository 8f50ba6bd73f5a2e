"""The agent's experiment tools and unit meter: happy paths, activations equal to the meter's, and
every kind of bad call answered as a readable error result. No Ray, no HTTP: a random-weight
probe CNN and the in-process procedural renderer."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from coin_scale.agent.subject import (
    ExemplarImage,
    TorchUnitMeter,
    UnitSubject,
    exemplars_from_paths,
)
from coin_scale.agent.tools import ExperimentTools, ToolOutcome
from coin_scale.llm.messages import ToolCall
from coin_scale.models.activations import ActivationCapture
from coin_scale.models.preprocess import Preprocess
from coin_scale.models.probe_cnn import probe_cnn
from unity_pool.client import RenderFailed
from unity_pool.sampling import sample_scenes
from unity_pool.tools import LocalRenderer, RenderTools

PREPROCESS = Preprocess(resize=64, crop=64)
UNIT = 5


def _model() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return probe_cnn(num_classes=4, width=16).eval()


def _spec(color: str = "red", shape: str = "star", size: int = 64) -> dict:
    return {
        "version": 1,
        "objects": [{"shape": shape, "color": color, "size": 0.5}],
        "width": size,
        "height": size,
        "seed": 1,
    }


class CountingMeter:
    """Wraps a meter and counts the images it measured."""

    def __init__(self, inner: TorchUnitMeter) -> None:
        self.inner = inner
        self.images = 0

    def measure(self, images: Sequence[Image.Image]) -> list[float]:
        self.images += len(images)
        return self.inner.measure(images)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def meter(model) -> TorchUnitMeter:
    return TorchUnitMeter(model, PREPROCESS, "layer4", "nchw", UNIT)


@pytest.fixture(scope="module")
def subject(meter) -> UnitSubject:
    """Top 8 of 24 rendered probe scenes for the unit, with their ground-truth attributes."""
    results = LocalRenderer().render_many(
        sample_scenes(24, 0, width=64, height=64, fixed={"n_objects": 1})
    )
    images = [Image.open(io.BytesIO(r.data)) for r in results]
    acts = meter.measure(images)
    top = sorted(range(len(acts)), key=lambda i: -acts[i])[:8]
    exemplars = tuple(
        ExemplarImage(
            png=results[i].data, activation=acts[i], attributes=dict(results[i].attributes)
        )
        for i in top
    )
    return UnitSubject(model="probe_cnn", layer="layer4", unit=UNIT, exemplars=exemplars)


def _tools(subject, meter, **kwargs) -> ExperimentTools:
    render_tools = kwargs.pop("render_tools", None) or RenderTools()
    return ExperimentTools(subject, meter, render_tools, **kwargs)


def _call(tools: ExperimentTools, name: str, arguments: dict | None, raw: str = "") -> ToolOutcome:
    raw = raw or (json.dumps(arguments) if arguments is not None else "")
    return tools.call(ToolCall(id="c1", name=name, arguments=arguments, raw_arguments=raw))


def _content(outcome: ToolOutcome) -> dict:
    return json.loads(outcome.result.content)


def _sizes(outcome: ToolOutcome) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(part.data)).size for part in outcome.result.images]


# --- the meter -------------------------------------------------------------------------------


def test_meter_equals_the_dissection_capture_and_is_batch_independent(model, meter) -> None:
    images = [
        Image.open(io.BytesIO(r.data))
        for r in LocalRenderer().render_many([_spec(c) for c in ("red", "blue", "green")])
    ]
    pixels = torch.stack([PREPROCESS.load(im) for im in images])
    with torch.inference_mode():
        direct = ActivationCapture(model, {"layer4": "nchw"})(PREPROCESS.normalize(pixels))
    expected = direct["layer4"]["max"][:, UNIT]
    small = TorchUnitMeter(model, PREPROCESS, "layer4", "nchw", UNIT, batch_size=2)
    torch.testing.assert_close(torch.tensor(meter.measure(images)), expected)
    torch.testing.assert_close(torch.tensor(small.measure(images)), expected)


def test_meters_of_one_module_are_safe_from_threads(model) -> None:
    images = [
        Image.open(io.BytesIO(r.data))
        for r in LocalRenderer().render_many([_spec(c) for c in ("red", "blue", "yellow", "pink")])
    ]
    meters = [TorchUnitMeter(model, PREPROCESS, "layer4", "nchw", u) for u in (1, 2, 3, 4)]
    expected = [m.measure(images) for m in meters]
    got: dict[int, list[list[float]]] = {i: [] for i in range(4)}

    def work(i: int) -> None:
        for _ in range(5):
            got[i].append(meters[i].measure(images))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert all(values == pytest.approx(expected[i]) for values in got[i])


def test_exemplars_from_paths_reads_images_and_probe_attributes(tmp_path) -> None:
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    root = tmp_path / "probe"
    write_probe_set(root, ProbeSetParams(n=4, seed=0, size=40), progress=False)
    import pyarrow.parquet as pq

    rows = pq.read_table(root / "attributes.parquet").to_pylist()
    paths = [root / rows[i]["image_path"] for i in (2, 0)]
    exemplars = exemplars_from_paths(
        [(paths[0], 3.0), (paths[1], 1.5)], attributes_path=root / "attributes.parquet", max_side=32
    )
    assert [e.activation for e in exemplars] == [3.0, 1.5]
    expected = {k: v for k, v in rows[2].items() if k != "image_path"}
    assert exemplars[0].attributes == expected
    assert exemplars[0].source == str(paths[0])
    assert exemplars[0].image().size == (32, 32)
    assert exemplars[0].png.startswith(b"\x89PNG")
    labelled = exemplars_from_paths([(paths[0], 1.0)], labels=["cats"], max_side=None)
    assert labelled[0].label == "cats" and labelled[0].attributes is None
    assert labelled[0].image().size == (40, 40)
    with pytest.raises(ValueError, match="one per item"):
        exemplars_from_paths([(paths[0], 1.0)], labels=["a", "b"])


# --- specs and happy paths ---------------------------------------------------------------------


class FakeTextToImage:
    def generate(self, prompts: Sequence[str], seed: int) -> list[Image.Image]:
        return [Image.new("RGB", (200, 150), (20 * len(p) % 256, 40, 90)) for p in prompts]


class FakeDescriber:
    def describe(self, images: Sequence[Image.Image]) -> list[str]:
        return [f"an image of {im.size[0]}x{im.size[1]} pixels" for im in images]


def test_specs_offer_only_configured_tools_as_valid_schemas(subject, meter) -> None:
    plain = _tools(subject, meter)
    assert [s.name for s in plain.specs()] == ["exemplars", "render", "edit", "measure", "finish"]
    full = _tools(
        subject,
        meter,
        render_tools=RenderTools(text_to_image=FakeTextToImage()),
        describer=FakeDescriber(),
    )
    names = [s.name for s in full.specs()]
    assert names == ["exemplars", "render", "edit", "text2image", "describe", "measure", "finish"]
    for spec in full.specs():
        jsonschema.Draft202012Validator.check_schema(spec.parameters)
        assert spec.parameters["type"] == "object" and spec.description
    bare = ExperimentTools(
        UnitSubject(model="m", layer="l", unit=0), meter, RenderTools(), image_size=32
    )
    assert "exemplars" not in [s.name for s in bare.specs()]


def test_exemplars_tool_returns_downscaled_images_with_activations(subject, meter) -> None:
    outcome = _call(_tools(subject, meter, image_size=32), "exemplars", {"k": 3})
    assert outcome.status == "ok" and not outcome.result.is_error
    entries = _content(outcome)["exemplars"]
    assert [e["id"] for e in entries] == ["ex-0", "ex-1", "ex-2"]
    for entry, ex in zip(entries, subject.exemplars, strict=False):
        assert entry["activation"] == pytest.approx(ex.activation, rel=1e-4)
        assert entry["attributes"] == ex.attributes
    assert _sizes(outcome) == [(32, 32)] * 3
    assert outcome.summary.startswith("3 exemplars: ex-0=")
    default = _content(_call(_tools(subject, meter), "exemplars", {}))["exemplars"]
    assert len(default) == 6


def test_exemplars_tool_names_the_first_messages_images_instead_of_attaching_them_again(
    subject, meter
) -> None:
    """The first message of every request carries the top exemplars (`first_message`): the
    tool lists them with their activations and attaches only the ones that message lacks."""
    tools = _tools(subject, meter, image_size=32)
    tools.exemplars_in_first_message(2)
    outcome = _call(tools, "exemplars", {"k": 4})
    content = _content(outcome)
    assert [e["id"] for e in content["exemplars"]] == ["ex-0", "ex-1", "ex-2", "ex-3"]
    assert content["in_first_message"] == ["ex-0", "ex-1"]
    assert "not attached again" in content["note"]
    assert outcome.result.images == _call(_tools(subject, meter, image_size=32), "exemplars", {"k": 4}).result.images[2:]
    tools.exemplars_in_first_message(8)
    every = _call(tools, "exemplars", {"k": 4})
    assert every.result.images == () and _content(every)["in_first_message"] == [
        "ex-0", "ex-1", "ex-2", "ex-3"
    ]


def test_render_returns_the_meters_activation_for_every_image(subject, meter) -> None:
    render_tools = RenderTools()
    tools = _tools(subject, meter, render_tools=render_tools, image_size=48)
    specs = [_spec("red", size=96), _spec("blue", "circle", size=96)]
    outcome = _call(tools, "render", {"specs": specs})
    assert outcome.status == "ok"
    images = _content(outcome)["images"]
    ids = [i["id"] for i in images]
    direct = meter.measure([render_tools.store.image(i) for i in ids])
    assert [i["activation"] for i in images] == pytest.approx(direct, rel=1e-4)
    assert (
        images[0]["attributes"]["color"] == "red" and images[1]["attributes"]["shape"] == "circle"
    )
    assert _sizes(outcome) == [(48, 48), (48, 48)]
    assert "scene" not in images[0]
    assert ids[0] in outcome.summary and "red" in outcome.summary


def test_edit_reports_the_edited_and_the_parent_activation(subject, meter) -> None:
    render_tools = RenderTools()
    tools = _tools(subject, meter, render_tools=render_tools)
    (parent,) = _content(_call(tools, "render", {"specs": [_spec("red")]}))["images"]
    outcome = _call(tools, "edit", {"image": parent["id"], "changes": {"color": "blue"}})
    assert outcome.status == "ok"
    data = _content(outcome)
    (edited,) = data["images"]
    assert edited["attributes"]["color"] == "blue" and edited["parent"] == parent["id"]
    (direct,) = meter.measure([render_tools.store.image(edited["id"])])
    assert edited["activation"] == pytest.approx(direct, rel=1e-4)
    assert data["parent"] == {"id": parent["id"], "activation": parent["activation"]}
    by_scene = _call(tools, "edit", {"scene": _spec("red"), "changes": {"shape": "circle"}})
    assert by_scene.status == "ok" and "parent" not in _content(by_scene)


def test_measure_uses_stored_images_and_exemplars_once_each(subject, meter) -> None:
    counting = CountingMeter(meter)
    render_tools = RenderTools()
    tools = _tools(subject, counting, render_tools=render_tools)
    (made,) = _content(_call(tools, "render", {"specs": [_spec()]}))["images"]
    outcome = _call(tools, "measure", {"images": [made["id"], "ex-1", made["id"]]})
    assert outcome.status == "ok" and not outcome.result.images
    values = [e["activation"] for e in _content(outcome)["activations"]]
    assert values[0] == values[2] == made["activation"]
    (ex1,) = meter.measure([subject.exemplars[1].image()])
    assert values[1] == pytest.approx(ex1, rel=1e-4)
    assert counting.images == 2  # the render, then ex-1; the repeated id is not re-measured


def test_text2image_and_describe_when_configured(subject, meter) -> None:
    render_tools = RenderTools(text_to_image=FakeTextToImage())
    tools = _tools(subject, meter, render_tools=render_tools, describer=FakeDescriber())
    outcome = _call(tools, "text2image", {"prompts": ["a red fox", "a blue car"]})
    assert outcome.status == "ok"
    images = _content(outcome)["images"]
    assert [i["prompt"] for i in images] == ["a red fox", "a blue car"]
    direct = meter.measure([render_tools.store.image(i["id"]) for i in images])
    assert [i["activation"] for i in images] == pytest.approx(direct, rel=1e-4)
    assert _sizes(outcome) == [(128, 96), (128, 96)]
    described = _call(tools, "describe", {"images": [images[0]["id"], "ex-0"]})
    texts = [d["text"] for d in _content(described)["descriptions"]]
    assert texts == ["an image of 200x150 pixels", "an image of 64x64 pixels"]


class FakeEditor:
    """Inverts the image (so the unit's activation changes) and remembers what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[tuple[int, int], str, int]] = []

    def edit(self, image: Image.Image, instruction: str, seed: int) -> Image.Image:
        self.told.append((image.size, instruction, seed))
        return Image.eval(image.convert("RGB"), lambda v: 255 - v)


def test_an_instruction_edits_any_image_exemplars_included(subject, meter) -> None:
    editor = FakeEditor()
    render_tools = RenderTools(text_to_image=FakeTextToImage(), image_editor=editor)
    tools = _tools(subject, meter, render_tools=render_tools)
    edit_spec = next(s for s in tools.specs() if s.name == "edit")
    jsonschema.Draft202012Validator.check_schema(edit_spec.parameters)
    assert "instruction" in edit_spec.parameters["properties"]
    assert "ex" in edit_spec.parameters["properties"]["image"]["pattern"]

    outcome = _call(tools, "edit", {"image": "ex-0", "instruction": "remove the grass", "seed": 3})
    assert outcome.status == "ok", outcome.result.content
    data = _content(outcome)
    (edited,) = data["images"]
    assert edited["parent"] == "ex-0" and edited["prompt"] == "remove the grass"
    assert editor.told == [((64, 64), "remove the grass", 3)]
    (direct,) = meter.measure([render_tools.store.image(edited["id"])])
    assert edited["activation"] == pytest.approx(direct, rel=1e-4)
    assert data["parent"]["id"] == "ex-0"
    assert data["parent"]["activation"] == pytest.approx(subject.exemplars[0].activation, rel=1e-4)
    assert 'from ex-0=' in outcome.summary and 'as told: "remove the grass"' in outcome.summary

    # A generated image (no scene behind it) is edited by instruction too; `changes` needs a scene.
    (made,) = _content(_call(tools, "text2image", {"prompts": ["a dog"]}))["images"]
    again = _call(tools, "edit", {"image": made["id"], "instruction": "make the dog a cat"})
    assert again.status == "ok" and _content(again)["images"][0]["parent"] == made["id"]
    for args in (
        {"image": "ex-0", "instruction": "x", "changes": {"color": "red"}},
        {"scene": _spec(), "instruction": "x"},
        {"instruction": "x"},
        {"image": "ex-0"},
    ):
        refused = _call(tools, "edit", args)
        assert refused.status == "invalid" and "Nothing was run" in _content(refused)["error"]
    assert len(editor.told) == 2
    # Without an editor the edit tool has no instruction at all.
    plain = _tools(subject, meter)
    refused = _call(plain, "edit", {"image": "ex-0", "instruction": "x"})
    assert refused.status == "invalid" and "instruction" in _content(refused)["error"]


def test_finish_parses_the_answer(subject, meter) -> None:
    arguments = {
        "label": "red star",
        "description": "Fires on red stars.",
        "confidence": 0.8,
        "evidence": ["img-000001 = 3.2"],
    }
    outcome = _call(_tools(subject, meter), "finish", arguments)
    assert outcome.status == "finished" and outcome.answer is not None
    assert outcome.answer.label == "red star" and outcome.answer.confidence == 0.8
    assert outcome.answer.evidence == ("img-000001 = 3.2",)


# --- refused and failing calls ----------------------------------------------------------------

FINISH = {"label": "x", "description": "y", "confidence": 0.5, "evidence": []}

INVALID = [
    ("unknown tool", "paint", {"what": 1}, "unknown tool 'paint'; available tools: exemplars"),
    ("not an object", "render", None, "not a JSON object (got '{not json')"),
    ("missing field", "render", {}, "missing required field(s) 'specs'"),
    ("extra field", "exemplars", {"k": 1, "n": 2}, "unknown field(s) 'n'; allowed: k"),
    ("wrong type", "exemplars", {"k": "six"}, 'k: expected integer; got string "six"'),
    ("k too small", "exemplars", {"k": 0}, "k: expected a number in [1, 8]; got 0"),
    ("k too large", "exemplars", {"k": 99}, "k: expected a number in [1, 8]; got 99"),
    ("confidence", "finish", {**FINISH, "confidence": 1.5}, "confidence: expected a number in [0, 1]"),
    ("long label", "finish", {**FINISH, "label": "x" * 81}, "label: expected a string of 1 to 80 characters; got 81"),
    ("blank label", "finish", {**FINISH, "label": "  "}, "label: expected a non-blank string"),
    ("no evidence", "finish", {k: v for k, v in FINISH.items() if k != "evidence"}, "'evidence'"),
    ("bad enum", "render", {"specs": [_spec("reddish")]}, "specs[0].objects[0].color: expected one"),
    ("no specs", "render", {"specs": []}, "specs: expected 1 to 64 items; got 0"),
    # The scene schema is part of the render tool's: a bad spec is refused before any scene is
    # built (`_render` builds them without checking the schema again).
    ("spec field", "render", {"specs": [_spec(), {**_spec(), "fog": 1}]}, "specs[1]: unknown field(s) 'fog'"),
    ("spec range", "render", {"specs": [{**_spec(), "objects": [{"shape": "star", "color": "red", "size": 9}]}]}, "specs[0].objects[0].size: expected a number in [0.02, 1.5]; got 9"),
    ("spec version", "render", {"specs": [{**_spec(), "version": 2}]}, "specs[0].version: expected 1; got 2"),
    ("spec object", "render", {"specs": [{**_spec(), "objects": [{"color": "red"}]}]}, "specs[0].objects[0]: missing required field(s) 'shape'"),
    ("bad id", "measure", {"images": ["cat.png"]}, "images[0]: expected a string matching /^(img|ex)-[0-9]+$/; got 'cat.png'"),
    ("both", "edit", {"image": "img-0", "scene": _spec(), "changes": {"color": "red"}}, "exactly one"),
    ("neither", "edit", {"changes": {"color": "red"}}, "exactly one of 'image'"),
    ("bad change", "edit", {"image": "img-0", "changes": {"colour": "red"}}, "unknown field(s) 'colour'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "name", "arguments", "expected"), INVALID, ids=[c[0] for c in INVALID]
)
def test_bad_calls_are_refused_with_a_readable_error_and_nothing_runs(
    subject, meter, case, name, arguments, expected
) -> None:
    counting = CountingMeter(meter)
    render_tools = RenderTools()
    tools = _tools(subject, counting, render_tools=render_tools)
    outcome = _call(tools, name, arguments, raw="{not json" if arguments is None else "")
    assert outcome.status == "invalid" and outcome.result.is_error, case
    message = _content(outcome)["error"]
    assert expected in message, message
    assert outcome.result.call_id == "c1" and outcome.result.name == name
    assert outcome.summary.startswith("invalid: ")
    assert counting.images == 0 and len(render_tools.store) == 0


def test_tool_failures_are_error_results(subject, meter) -> None:
    class Broken:
        def render_many(self, scenes):
            raise RenderFailed("backend crashed")

    tools = _tools(subject, meter, render_tools=RenderTools(renderer=Broken()))
    outcome = _call(tools, "render", {"specs": [_spec()]})
    assert outcome.status == "error" and outcome.result.is_error
    assert _content(outcome)["error"] == "render failed: backend crashed"
    unknown = _call(tools, "measure", {"images": ["img-000042"]})
    assert (
        unknown.status == "error" and "unknown image id 'img-000042'" in _content(unknown)["error"]
    )
    exemplar = _call(tools, "measure", {"images": ["ex-99"]})
    assert exemplar.status == "error" and "this unit has 8" in _content(exemplar)["error"]


def test_nothing_sent_is_executed(subject, meter, tmp_path) -> None:
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    tools = _tools(subject, meter)
    for name, arguments in [
        ("render", {"specs": [code]}),
        ("measure", {"images": [code]}),
        (
            "finish",
            {"label": code[:80], "description": code, "confidence": 0.1, "evidence": [code[:200]]},
        ),
    ]:
        tools.call(ToolCall(id="c", name=name, arguments=arguments, raw_arguments=code))
    assert not marker.exists()


def test_image_parts_never_exceed_image_size(subject, meter) -> None:
    tools = _tools(subject, meter, image_size=24)
    outcomes = [
        _call(tools, "exemplars", {"k": 8}),
        _call(tools, "render", {"specs": [_spec(size=200), _spec("blue", size=300)]}),
    ]
    sizes = [s for o in outcomes for s in _sizes(o)]
    assert len(sizes) == 10 and max(max(s) for s in sizes) <= 24
    pixels = np.asarray(Image.open(io.BytesIO(outcomes[1].result.images[0].data)))
    assert pixels.shape == (24, 24, 3)


# --- visualize(n) ----------------------------------------------------------------------------


def test_visualize_offers_synthesised_images_that_drive_the_unit(model, meter, subject) -> None:
    """The tool is offered only with a visualizer; its images are stored, measured by the meter
    like any image, attached, new on every call; a bad n is refused before anything runs."""
    from coin_scale.agent.visualizer import TorchUnitVisualizer

    assert "visualize" not in [s.name for s in _tools(subject, meter).specs()]
    visualizer = TorchUnitVisualizer(model, PREPROCESS, "layer4", "nchw", UNIT, steps=24)
    tools = _tools(subject, meter, visualizer=visualizer)
    assert "visualize" in [s.name for s in tools.specs()]

    first = _call(tools, "visualize", {"n": 2})
    assert first.status == "ok" and len(first.result.images) == 2
    entries = _content(first)["images"]
    assert [e["source"] for e in entries] == ["visualization", "visualization"]
    ids = [e["id"] for e in entries]
    # the activations are the meter's, measured on the stored (8-bit) images
    stored = [tools.render_tools.store.image(i) for i in ids]
    assert [e["activation"] for e in entries] == pytest.approx(meter.measure(stored), rel=1e-4)
    # what the unit wants most beats its best probe scene
    assert max(e["activation"] for e in entries) > subject.exemplars[0].activation
    # a second call continues the seeds: new images; measure and edit-free reuse work on the ids
    second = _call(tools, "visualize", {})
    assert len(_content(second)["images"]) == 2 and second.result.images != first.result.images
    assert _call(tools, "measure", {"images": ids}).status == "ok"
    refused = _call(tools, "visualize", {"n": 9})
    assert refused.status == "invalid" and "n: expected a number in [1, 4]" in _content(refused)["error"]
