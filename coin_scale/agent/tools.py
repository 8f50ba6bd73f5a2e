"""The agent's experiment tools: look at exemplars, render and edit scenes, measure the unit, finish.

`ExperimentTools.call` takes a structured `ToolCall` and always returns a `ToolOutcome` for
anything the model may get wrong: arguments are validated against the tool's JSON Schema (Draft
2020-12) before anything runs, and an unknown tool, arguments that are not a JSON object or a
schema violation come back as an error result the model can read and act on (status 'invalid');
a renderer or backend failure comes back the same way (status 'error'). Other exceptions (a
broken meter) propagate: the loop ends the unit. Nothing the model sends is executed as code.

Rendering, editing and text-to-image are `unity_pool.tools.RenderTools`; this module adds the
unit's activation on every new image and attaches the images, downscaled to `image_size`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jsonschema
from PIL import Image

from coin_scale.agent.context import fit
from coin_scale.agent.describe import DescribeFailed
from coin_scale.agent.masks import full_resolution_crop
from coin_scale.agent.subject import UnitMeter, UnitSubject
from coin_scale.agent.visualizer import MAX_VISUALIZATIONS, Visualizer
from coin_scale.llm.messages import ImagePart, ToolCall, ToolResult, ToolSpec
from unity_pool.client import RenderFailed
from unity_pool.scene import Scene, SceneError
from unity_pool.schema import SchemaChecker
from unity_pool.tools import RenderTools, ToolError, ToolUnavailable

ToolStatus = Literal["ok", "invalid", "error", "finished"]

EXEMPLAR_PREFIX = "ex"
"""Exemplar images are `ex-0`, `ex-1`, ... (rank order); made images are the store's ids."""

RECOVERABLE: tuple[type[Exception], ...] = (
    ToolError, ToolUnavailable, RenderFailed, SceneError, ConnectionError, TimeoutError,
    DescribeFailed,
)  # fmt: skip
"""Tool failures reported to the model as an error result (status 'error'), not raised."""

FULL_RESOLUTION_TOOLS = frozenset({"crop"})
"""Tools whose images reach the model at their own size (up to `masks.CROP_SIDE`), not fitted
to the agent's image size."""

MAX_LABEL_CHARS = 80
MAX_DESCRIPTION_CHARS = 1000
MAX_EVIDENCE = 20
MAX_SUMMARY_CHARS = 600


class Describer(Protocol):
    """A vision captioner: one short description per image (`agent.describe.GatewayDescriber`).
    One that also has `summarize(images) -> str` is offered as the `summarize` tool too."""

    def describe(self, images: Sequence[Image.Image]) -> list[str]:
        """One description per image, in order."""
        ...


@dataclass(frozen=True, kw_only=True)
class FinishAnswer:
    """The agent's final answer about the unit."""

    label: str
    """Short label, 1 to 80 characters."""
    description: str
    """One or two sentences."""
    confidence: float
    """In [0, 1]."""
    evidence: tuple[str, ...] = ()
    """Short strings or image ids supporting it."""
    test_prompts: tuple[str, ...] = ()
    """Text-to-image prompts of images that should drive the unit if the label is right (offered
    with an image generator): MAIA's predictive evaluation tests the label on them."""


@dataclass(frozen=True, kw_only=True)
class ToolOutcome:
    """What one tool call produced: the result for the model and the record of the step."""

    result: ToolResult
    """Sent back to the model."""
    status: ToolStatus
    """'ok', 'invalid' (unknown tool or bad arguments), 'error' (the tool failed), 'finished'."""
    summary: str
    """A line for the experiments table and the trimmed context."""
    answer: FinishAnswer | None = None
    """The parsed answer of a valid `finish`."""
    shown: tuple[ShownImage, ...] = ()
    """The images attached to the result, with their ids and the unit's activation on each (for
    the experiment log: what the agent saw at this step)."""


@dataclass(frozen=True, kw_only=True)
class ShownImage:
    """One image a tool result showed the agent."""

    image_id: str
    """`ex-N` (an exemplar) or the store's id of an image made by a tool."""
    activation: float | None
    """The unit's activation on it (None when not measured)."""
    part: ImagePart
    """The image as attached (downscaled to the tools' image size)."""


FINISH_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {
            "type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS, "pattern": "\\S",
            "description": "What the unit detects, in a few words (e.g. 'red star').",
        },
        "description": {
            "type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS,
            "pattern": "\\S", "description": "One or two sentences: what drives the unit.",
        },
        "confidence": {
            "type": "number", "minimum": 0, "maximum": 1,
            "description": "How sure you are, from 0 to 1.",
        },
        "evidence": {
            "type": "array", "maxItems": MAX_EVIDENCE,
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": "Image ids with activations, or short findings, that support it.",
        },
    },
    "required": ["label", "description", "confidence", "evidence"],
    "additionalProperties": False,
}  # fmt: skip
"""JSON Schema of `finish` (and of a final answer given as JSON text)."""

MAX_TEST_PROMPTS = 5
"""Test prompts a `finish` may give (MAIA's predictive evaluation uses five)."""

TEST_PROMPTS_PARAMETER: dict[str, Any] = {
    "type": "array", "minItems": 1, "maxItems": MAX_TEST_PROMPTS,
    "items": {"type": "string", "minLength": 3, "maxLength": 200, "pattern": "\\S"},
    "description": "Optional: up to 5 text-to-image prompts for new images that should make the "
    "unit fire strongly if your label is right, varied in setting and composition (e.g. 'a red "
    "star painted on a brick wall'); the label is tested on the images they generate against "
    "neutral ones.",
}  # fmt: skip
"""`finish`'s `test_prompts`, offered when the agents have a text-to-image generator."""


def finish_parameters(*, test_prompts: bool) -> dict[str, Any]:
    """`finish`'s schema, with the optional `test_prompts` when the label can be tested on
    generated images."""
    if not test_prompts:
        return FINISH_PARAMETERS
    return {
        **FINISH_PARAMETERS,
        "properties": {**FINISH_PARAMETERS["properties"], "test_prompts": TEST_PROMPTS_PARAMETER},
    }


def answer_from_arguments(arguments: Mapping[str, Any]) -> FinishAnswer:
    """The answer of validated `finish` arguments."""
    return FinishAnswer(
        label=str(arguments["label"]).strip(),
        description=str(arguments["description"]).strip(),
        confidence=float(arguments["confidence"]),
        evidence=tuple(str(e) for e in arguments.get("evidence", ())),
        test_prompts=tuple(" ".join(str(p).split()) for p in arguments.get("test_prompts", ())),
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "value"


def _where(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(arguments)"


def describe_schema_error(error: jsonschema.ValidationError) -> str:
    """One validation error in words: where, what is allowed, what was given."""
    where, kind, rule, got = _where(error), error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if kind == "required":
        missing = [name for name in rule if isinstance(got, Mapping) and name not in got]
        return f"{where}: missing required field(s) {', '.join(map(repr, missing))}"
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(got) - set(allowed)) if isinstance(got, Mapping) else []
        return (
            f"{where}: unknown field(s) {', '.join(map(repr, extra))}; "
            f"allowed: {', '.join(allowed)}"
        )
    if kind == "enum":
        return f"{where}: expected one of {', '.join(map(str, rule))}; got {got!r:.60}"
    if kind == "type":
        return f"{where}: expected {rule}; got {_json_type(got)} {json.dumps(got)[:60]}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low, high = schema.get("minimum", "-inf"), schema.get("maximum", "inf")
        return f"{where}: expected a number in [{low}, {high}]; got {got!r}"
    if kind in ("minItems", "maxItems"):
        low, high = schema.get("minItems", 0), schema.get("maxItems", "any")
        return f"{where}: expected {low} to {high} items; got {len(got)}"
    if kind in ("minLength", "maxLength"):
        low, high = schema.get("minLength", 0), schema.get("maxLength", "any")
        size = f"{len(got)} characters" if isinstance(got, str) else repr(got)
        return f"{where}: expected a string of {low} to {high} characters; got {size}"
    if kind == "pattern" and rule == "\\S":
        return f"{where}: expected a non-blank string; got {got!r:.60}"
    if kind == "pattern":
        return f"{where}: expected a string matching /{rule}/; got {got!r:.60}"
    if kind == "const":
        return f"{where}: expected {rule!r}; got {got!r:.60}"
    if kind == "minProperties":
        return f"{where}: expected at least {rule} field(s); got none"
    return f"{where}: {error.message[:200]}"


def schema_problems(
    validator: jsonschema.protocols.Validator | SchemaChecker, instance: object, *, limit: int = 3
) -> list[str]:
    """Up to `limit` validation problems in words, the most relevant first; [] when valid."""
    errors = list(validator.iter_errors(instance))
    if not errors:
        return []
    best = jsonschema.exceptions.best_match(errors)
    ordered = [best] + [e for e in errors if e is not best]
    problems: list[str] = []
    for error in ordered:
        text = describe_schema_error(error)
        if text not in problems:
            problems.append(text)
    return problems[:limit]


def _value(x: float) -> float:
    """An activation as shown to the model: 5 significant digits."""
    return float(f"{x:.5g}") if math.isfinite(x) else x


def _attribute_words(attributes: Mapping[str, Any] | None) -> str:
    return " ".join(str(v) for v in attributes.values()) if attributes else ""


def _entry_line(entry: Mapping[str, Any]) -> str:
    words = _attribute_words(entry.get("attributes")) or entry.get("label") or ""
    line = f"{entry['id']}={entry['activation']:.4g}"
    return f"{line} ({words})" if words else line


def _short(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _edit_problems(args: Mapping[str, Any]) -> list[str]:
    """What is wrong with schema-valid `edit` arguments as a whole (the two kinds of edit)."""
    if "instruction" in args:
        if "image" not in args or "scene" in args or "changes" in args:
            return ["(arguments): 'instruction' goes with 'image' (an id) alone, without "
                    "'changes' or 'scene'"]  # fmt: skip
        return []
    if "changes" not in args:
        return ["(arguments): missing required field(s) 'changes'"]
    if ("image" in args) == ("scene" in args):
        return ["(arguments): give exactly one of 'image' (an id) and 'scene' (a spec)"]
    return []


@dataclass(frozen=True, kw_only=True)
class _Done:
    payload: dict[str, Any]
    summary: str
    images: tuple[ImagePart, ...] = ()
    answer: FinishAnswer | None = None
    image_ids: tuple[str, ...] = ()
    """The ids of `images`, in order."""


class ExperimentTools:
    """The tools of one agent explaining one unit (one instance per unit: image ids are its own).

    `specs()` describes them for the LLM; `call(tool_call)` runs one. `text2image` is offered only
    when `render_tools` has a text-to-image backend, `describe` only with a `describer`,
    `visualize` only with a `visualizer`, `exemplars` only when the subject has exemplars.
    """

    def __init__(
        self,
        subject: UnitSubject,
        meter: UnitMeter,
        render_tools: RenderTools,
        describer: Describer | None = None,
        image_size: int = 128,
        *,
        max_attached_images: int = 16,
        max_measure: int = 64,
        visualizer: Visualizer | None = None,
    ) -> None:
        if image_size < 8 or max_attached_images < 1 or max_measure < 1:
            raise ValueError(
                "ExperimentTools needs image_size >= 8, max_attached_images >= 1, max_measure "
                f">= 1; got {image_size}, {max_attached_images}, {max_measure}"
            )
        self.subject = subject
        self.meter = meter
        self.render_tools = render_tools
        self.describer = describer
        self.image_size = image_size
        self.max_attached_images = max_attached_images
        self.max_measure = max_measure
        self.visualizer = visualizer
        self._visualize_calls = 0
        self._activations: dict[str, float] = {}
        """Activation by image id: images never change, so each is measured once."""
        self._in_first_message: frozenset[str] = frozenset()
        """Exemplar ids whose images the conversation's first message carries (every request)."""
        handlers: dict[str, Callable[[Mapping[str, Any]], _Done]] = {}
        self._masked = any(ex.masked_png is not None for ex in subject.exemplars)
        if subject.exemplars:
            handlers["exemplars"] = self._exemplars
        if any(ex.firing_box is not None and ex.source for ex in subject.exemplars):
            handlers["crop"] = self._crop
        handlers.update(render=self._render, edit=self._edit)
        if render_tools.text_to_image is not None:
            handlers["text2image"] = self._text2image
        if describer is not None:
            handlers["describe"] = self._describe
            if callable(getattr(describer, "summarize", None)):
                handlers["summarize"] = self._summarize
        if visualizer is not None:
            handlers["visualize"] = self._visualize
        handlers.update(measure=self._measure, finish=self._finish)
        self._handlers = handlers
        self._specs = self._build_specs()
        self._validators = {
            spec.name: SchemaChecker(spec.parameters) for spec in self._specs
        }

    # --- descriptions ---------------------------------------------------------------------

    def _id_list(self, limit: int, what: str) -> dict[str, Any]:
        prefix = self.render_tools.store.prefix
        return {
            "type": "array",
            "minItems": 1,
            "maxItems": limit,
            "items": {"type": "string", "pattern": f"^({prefix}|{EXEMPLAR_PREFIX})-[0-9]+$"},
            "description": f"Ids of {what}: exemplars ({EXEMPLAR_PREFIX}-0, ...) or images "
            f"made by earlier calls ({prefix}-000000, ...).",
        }

    def _build_specs(self) -> tuple[ToolSpec, ...]:
        render_defs = {d["name"]: d for d in self.render_tools.definitions()}
        measured = " Each image comes back with the unit's activation on it."
        specs: dict[str, ToolSpec] = {}
        n = len(self.subject.exemplars)
        if n:
            properties: dict[str, Any] = {
                "k": {"type": "integer", "minimum": 1, "maximum": n, "default": min(6, n)}
            }
            masked = ""
            if self._masked:
                properties["view"] = {
                    "type": "string", "enum": ["masked", "plain", "both"], "default": "masked",
                    "description": "masked images (the default: where the unit fires kept and "
                    "outlined in yellow, the rest dimmed), plain ones, or both (each plain image, "
                    "then its masked one; twice the images).",
                }  # fmt: skip
                masked = (
                    " They come masked by default: the square the model saw, where the unit "
                    "fires above its threshold kept and outlined, the rest dimmed."
                )
            specs["exemplars"] = ToolSpec(
                name="exemplars",
                description="The unit's top-k probe images (highest activation first), with "
                "their activations and, when known, ground-truth attributes." + masked,
                parameters={
                    "type": "object", "properties": properties, "additionalProperties": False,
                },
            )  # fmt: skip
        if "crop" in self._handlers:
            specs["crop"] = ToolSpec(
                name="crop",
                description="One exemplar's region where the unit fires, cut from the original "
                "photograph at full resolution (up to 512 pixels), to see its details.",
                parameters={
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "pattern": f"^{EXEMPLAR_PREFIX}-[0-9]+$",
                                  "description": f"An exemplar's id ({EXEMPLAR_PREFIX}-0, ...)."},
                    },
                    "required": ["image"],
                    "additionalProperties": False,
                },
            )  # fmt: skip
        if self.render_tools.image_editor is not None:  # an instruction edits exemplars too
            image = render_defs["edit"]["parameters"]["properties"]["image"]
            image["pattern"] = f"^({self.render_tools.store.prefix}|{EXEMPLAR_PREFIX})-[0-9]+$"
            image["description"] = (
                f"Id of the image to edit: an exemplar ({EXEMPLAR_PREFIX}-0, ...) or an image made "
                "by an earlier call (only rendered images can take `changes`)."
            )
        for name in ("render", "edit", "text2image"):
            if name in self._handlers:
                d = render_defs[name]
                specs[name] = ToolSpec(
                    name=name, description=d["description"] + measured, parameters=d["parameters"]
                )
        by = getattr(self.describer, "model", None)
        by = f" ({by})" if isinstance(by, str) and by else ""
        for name, what in (
            ("describe", "A short caption of each image by a vision model" + by + "."),
            ("summarize", "What the images have in common, in a sentence or two, by a vision "
             "model" + by + " (MAIA's summarize_images): e.g. of the top exemplars."),
        ):  # fmt: skip
            if name in self._handlers:
                specs[name] = ToolSpec(
                    name=name, description=what,
                    parameters={
                        "type": "object",
                        "properties": {"images": self._id_list(self.max_attached_images, "images")},
                        "required": ["images"],
                        "additionalProperties": False,
                    },
                )  # fmt: skip
        if "visualize" in self._handlers:
            specs["visualize"] = ToolSpec(
                name="visualize",
                description="Feature visualization: n images synthesised to drive the unit as "
                "hard as possible (optimised pixels, not a photo or a scene; free of the probe "
                "set's correlations). Use them to see what the unit wants most, then test that "
                "with renders and edits." + measured,
                parameters={
                    "type": "object",
                    "properties": {
                        "n": {"type": "integer", "minimum": 1, "maximum": MAX_VISUALIZATIONS,
                              "default": 2},
                    },
                    "additionalProperties": False,
                },
            )  # fmt: skip
        specs["measure"] = ToolSpec(
            name="measure",
            description="The unit's activation on images already made or shown (no new images).",
            parameters={
                "type": "object",
                "properties": {"images": self._id_list(self.max_measure, "images to measure")},
                "required": ["images"],
                "additionalProperties": False,
            },
        )
        specs["finish"] = ToolSpec(
            name="finish",
            description="Give the final explanation of the unit; ends the experiment.",
            parameters=finish_parameters(test_prompts="text2image" in self._handlers),
        )
        return tuple(specs[name] for name in self._handlers)

    def take_spend(self) -> tuple[int, float]:
        """Tokens and dollars the tools spent on LLM calls of their own (the describe model)
        since the last take; (0, 0.0) without such tools."""
        take = getattr(self.describer, "take_spend", None)
        return take() if callable(take) else (0, 0.0)

    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools offered, in a fixed order."""
        return self._specs

    # --- calling ----------------------------------------------------------------------------

    def call(self, call: ToolCall) -> ToolOutcome:
        """Validate and run one tool call (see the module docstring for what is raised)."""
        if call.name not in self._handlers:
            return self._refuse(
                call,
                f"unknown tool {call.name!r}; available tools: {', '.join(self._handlers)}. "
                "Fix: call one of those.",
            )
        if call.arguments is None:
            return self._refuse(
                call,
                f"{call.name}: the arguments are not a JSON object (got "
                f"{call.raw_arguments!r:.200}). Fix: send one JSON object that matches the "
                "tool's parameters schema.",
            )
        problems = schema_problems(self._validators[call.name], call.arguments)
        if call.name == "edit" and not problems:
            problems = _edit_problems(call.arguments)
        if problems:
            return self._refuse(
                call,
                f"{call.name}: invalid arguments: {'; '.join(problems)}. Nothing was run. "
                "Fix: correct the arguments to match the tool's parameters schema.",
            )
        try:
            done = self._handlers[call.name](call.arguments)
        except RECOVERABLE as err:
            message = f"{call.name} failed: {err}"
            return ToolOutcome(
                result=ToolResult(
                    call_id=call.id, name=call.name, content=json.dumps({"error": message}),
                    is_error=True,
                ),
                status="error",
                summary=_short(f"error: {message}"),
            )  # fmt: skip
        return ToolOutcome(
            result=ToolResult(
                call_id=call.id, name=call.name, content=json.dumps(done.payload),
                images=done.images,
            ),
            status="finished" if done.answer is not None else "ok",
            summary=_short(done.summary),
            answer=done.answer,
            shown=tuple(
                ShownImage(image_id=i, activation=self._known_activation(i), part=part)
                for i, part in zip(done.image_ids, done.images, strict=True)
            ),
        )  # fmt: skip

    def _refuse(self, call: ToolCall, message: str) -> ToolOutcome:
        return ToolOutcome(
            result=ToolResult(
                call_id=call.id, name=call.name, content=json.dumps({"error": message}),
                is_error=True,
            ),
            status="invalid",
            summary=_short(f"invalid: {message}"),
        )  # fmt: skip

    # --- images and activations ---------------------------------------------------------------

    def _exemplar_index(self, image_id: str) -> int | None:
        prefix = f"{EXEMPLAR_PREFIX}-"
        if not image_id.startswith(prefix):
            return None
        index = int(image_id[len(prefix) :])
        if index >= len(self.subject.exemplars):
            raise ToolError(
                f"unknown exemplar {image_id!r}; this unit has {len(self.subject.exemplars)} "
                f"({EXEMPLAR_PREFIX}-0 .. {EXEMPLAR_PREFIX}-{len(self.subject.exemplars) - 1})."
            )
        return index

    def _image(self, image_id: str) -> Image.Image:
        index = self._exemplar_index(image_id)
        if index is not None:
            return self.subject.exemplars[index].image()
        return self.render_tools.store.image(image_id)

    def activations(self, image_ids: Sequence[str]) -> list[float]:
        """The unit's activation on stored images or exemplars (each measured once)."""
        todo = list(dict.fromkeys(i for i in image_ids if i not in self._activations))
        if todo:
            values = self.meter.measure([self._image(i) for i in todo])
            if len(values) != len(todo):
                raise RuntimeError(f"meter returned {len(values)} values for {len(todo)} images")
            self._activations.update(zip(todo, map(float, values), strict=True))
        return [self._activations[i] for i in image_ids]

    def _known_activation(self, image_id: str) -> float | None:
        """The unit's activation on an image already measured (an exemplar's from the probe; a
        masked view or crop of one, `ex-N masked`, shows its exemplar's)."""
        image_id = image_id.split(" ")[0]
        if image_id in self._activations:
            return self._activations[image_id]
        index = self._exemplar_index(image_id)
        return float(self.subject.exemplars[index].activation) if index is not None else None

    def _attach(self, image_ids: Sequence[str]) -> tuple[ImagePart, ...]:
        parts = []
        for image_id in image_ids[: self.max_attached_images]:
            index = self._exemplar_index(image_id)
            # `fit` re-encodes only images larger than image_size; small ones go as they are.
            if index is not None:
                part = ImagePart(data=self.subject.exemplars[index].png, media_type="image/png")
            else:
                stored = self.render_tools.store.get(image_id)
                part = ImagePart(data=stored.data, media_type=f"image/{stored.format.lower()}")
            parts.append(fit(part, self.image_size))
        return tuple(parts)

    def _made(self, refs: list[dict[str, Any]], *, what: str) -> _Done:
        """Measure and attach newly made images (ref dicts of RenderTools)."""
        ids = [ref["id"] for ref in refs]
        entries = []
        for ref, value in zip(refs, self.activations(ids), strict=True):
            entry: dict[str, Any] = {"id": ref["id"], "activation": _value(value)}
            if ref.get("source") == "visualization":  # no scene behind it: say what it is
                entry["source"] = "visualization"
            for key in ("attributes", "parent", "prompt"):
                if ref.get(key) is not None:
                    entry[key] = ref[key]
            entries.append(entry)
        payload: dict[str, Any] = {"images": entries}
        if len(ids) > self.max_attached_images:
            payload["note"] = (
                f"images of the first {self.max_attached_images} ids are attached, in order"
            )
        summary = f"{len(ids)} {what}: " + ", ".join(_entry_line(e) for e in entries)
        return _Done(
            payload=payload, summary=summary, images=self._attach(ids),
            image_ids=tuple(ids[: self.max_attached_images]),
        )  # fmt: skip

    # --- the tools ------------------------------------------------------------------------------

    def exemplars_in_first_message(self, n: int) -> None:
        """The first message shows the top `n` exemplars (`prompts.first_message`) and is in
        every request: the exemplars tool names those instead of attaching them again."""
        n = min(max(0, n), len(self.subject.exemplars))
        self._in_first_message = frozenset(f"{EXEMPLAR_PREFIX}-{i}" for i in range(n))

    def _exemplars(self, args: Mapping[str, Any]) -> _Done:
        k = int(args.get("k", min(6, len(self.subject.exemplars))))
        entries = []
        for rank, ex in enumerate(self.subject.exemplars[:k]):
            entry: dict[str, Any] = {
                "id": f"{EXEMPLAR_PREFIX}-{rank}",
                "rank": rank,
                "activation": _value(ex.activation),
            }
            if ex.attributes is not None:
                entry["attributes"] = ex.attributes
            if ex.label is not None:
                entry["label"] = ex.label
            entries.append(entry)
        ids = [e["id"] for e in entries]
        payload: dict[str, Any] = {"exemplars": entries}
        summary = f"{k} exemplars: " + ", ".join(_entry_line(e) for e in entries)
        view = str(args.get("view", "masked")) if self._masked else "plain"
        shown: list[tuple[str, ImagePart]] = []
        in_first = []
        for rank, image_id in enumerate(ids):
            ex = self.subject.exemplars[rank]
            if view in ("both", "plain") or ex.masked_png is None:
                if image_id in self._in_first_message:
                    in_first.append(image_id)
                else:
                    shown.append((image_id, self._attach([image_id])[0]))
            if view in ("both", "masked") and ex.masked_png is not None:
                part = ImagePart(data=ex.masked_png, media_type="image/png")
                shown.append((f"{image_id} masked", fit(part, self.image_size)))
        notes = []
        if in_first:
            payload["in_first_message"] = in_first
            notes.append(
                "the images of in_first_message are attached to the first message, in rank "
                "order; they are not attached again"
            )
        if self._masked:
            payload["images"] = [i for i, _ in shown[: self.max_attached_images]]
        if len(shown) > self.max_attached_images:
            notes.append(f"the first {self.max_attached_images} images are attached")
        if notes:
            payload["note"] = "; ".join(notes)
        shown = shown[: self.max_attached_images]
        return _Done(
            payload=payload, summary=summary, images=tuple(p for _, p in shown),
            image_ids=tuple(i for i, _ in shown),
        )  # fmt: skip

    def _crop(self, args: Mapping[str, Any]) -> _Done:
        image_id = str(args["image"])
        index = self._exemplar_index(image_id)
        assert index is not None  # the schema allows exemplar ids only
        ex = self.subject.exemplars[index]
        if ex.firing_box is None or not ex.source:
            raise ToolError(f"{image_id} has no region where the unit fires above its threshold")
        try:
            crop = full_resolution_crop(ex.source, ex.firing_box)
        except OSError as err:
            raise ToolError(f"{image_id}: its original image cannot be read ({err})") from None
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        part = ImagePart(data=buffer.getvalue(), media_type="image/png")
        box = list(ex.firing_box)
        return _Done(
            payload={"image": image_id, "box": box, "width": crop.width, "height": crop.height},
            summary=f"crop of {image_id} at {box} ({crop.width}x{crop.height})",
            images=(part,), image_ids=(f"{image_id} crop",),
        )  # fmt: skip

    def _render(self, args: Mapping[str, Any]) -> _Done:
        # `call` checked the arguments against the render tool's schema, which holds the scene
        # schema: the scenes are built without checking every spec against it a second time.
        scenes = []
        for i, spec in enumerate(args["specs"]):
            try:
                scenes.append(Scene.from_dict(spec, validate=False))
            except SceneError as err:
                raise ToolError(f"specs[{i}]: {err}") from None
        refs = [ref.to_dict() for ref in self.render_tools.render(scenes)]
        return self._made(refs, what="renders")

    def _edit(self, args: Mapping[str, Any]) -> _Done:
        parent = args.get("image")
        if "instruction" in args:  # any image, exemplars included, through the image editor
            ref = self.render_tools.edit_image(
                self._image(str(parent)), args["instruction"], parent=parent,
                seed=int(args.get("seed", 0)),
            )  # fmt: skip
            refs = [ref.to_dict()]
            change = f"as told: {json.dumps(args['instruction'])}"
        else:
            refs = self.render_tools.call("edit", args)["images"]
            change = f"changing {json.dumps(args['changes'])}"
        done = self._made(refs, what="edit")
        if not isinstance(parent, str):
            return done
        (value,) = self.activations([parent])
        payload = {**done.payload, "parent": {"id": parent, "activation": _value(value)}}
        summary = f"{done.summary} from {parent}={value:.4g} {change}"
        return _Done(payload=payload, summary=summary, images=done.images, image_ids=done.image_ids)

    def _text2image(self, args: Mapping[str, Any]) -> _Done:
        refs = self.render_tools.call("text2image", args)["images"]
        return self._made(refs, what="generated images")

    def _visualize(self, args: Mapping[str, Any]) -> _Done:
        assert self.visualizer is not None  # offered only with a visualizer
        n = int(args.get("n", 2))
        images = self.visualizer.visualize(n, seed=self._visualize_calls)
        self._visualize_calls += 1  # a second call gives new images
        refs = []
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            ref = self.render_tools.store.add(
                buffer.getvalue(), source="visualization", width=image.width, height=image.height
            )
            refs.append(ref.to_dict())
        return self._made(refs, what="visualizations")

    def _measure(self, args: Mapping[str, Any]) -> _Done:
        ids = list(args["images"])
        entries = [
            {"id": i, "activation": _value(v)}
            for i, v in zip(ids, self.activations(ids), strict=True)
        ]
        summary = "measured: " + ", ".join(_entry_line(e) for e in entries)
        return _Done(payload={"activations": entries}, summary=summary)

    def _describe(self, args: Mapping[str, Any]) -> _Done:
        assert self.describer is not None  # offered only with a describer
        ids = list(args["images"])
        texts = self.describer.describe([self._image(i) for i in ids])
        if len(texts) != len(ids):
            raise RenderFailed(f"the describer returned {len(texts)} captions for {len(ids)}")
        entries = [{"id": i, "text": str(t)} for i, t in zip(ids, texts, strict=True)]
        summary = "described: " + "; ".join(f"{e['id']}: {e['text']}" for e in entries)
        return _Done(payload={"descriptions": entries}, summary=summary)

    def _summarize(self, args: Mapping[str, Any]) -> _Done:
        ids = list(args["images"])
        text = str(self.describer.summarize([self._image(i) for i in ids]))  # type: ignore[union-attr]
        return _Done(
            payload={"images": ids, "summary": text},
            summary=_short(f"summary of {', '.join(ids)}: {text}"),
        )

    def _finish(self, args: Mapping[str, Any]) -> _Done:
        answer = answer_from_arguments(args)
        summary = f"finished: {answer.label!r} (confidence {answer.confidence:.2f})"
        return _Done(payload={"ok": True}, summary=summary, answer=answer)
