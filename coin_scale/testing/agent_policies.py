"""Scripted stand-ins for the LLM that drives the agent (the `Policy` protocol of `policy.py`).

Deterministic and driven only by what a `ConversationView` exposes: the tools offered, the JSON of
the tool results, the user texts. `ExperimenterPolicy` does what a careful agent would on rendered
scenes (exemplars, contrasting renders, one controlled edit, finish); the others misbehave in one
specific way each, to test the loop's handling of it. Nothing is registered globally.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coin_scale.testing.policy import Action, CallTool, ConversationView, Policy, Reply
from unity_pool import vocab

VARIED: tuple[str, ...] = ("color", "shape", "texture")
"""Attributes of the main object that `ExperimenterPolicy` varies, in the order it names them."""

_VALUES: Mapping[str, tuple[str, ...]] = {
    "color": vocab.COLORS,
    "shape": vocab.SHAPES,
    "texture": vocab.TEXTURES,
}
_DEFAULTS = {"color": "white", "shape": "circle", "texture": "solid"}


def _latest(view: ConversationView, name: str | None = None) -> tuple[str, Any] | None:
    """(tool name, parsed JSON) of the latest successful tool result (of `name`, if given)."""
    for result in reversed(view.tool_results):
        if not result.is_error and (name is None or result.name == name):
            return result.name, result.json()
    return None


def _exemplar_attributes(view: ConversationView) -> list[dict[str, Any]]:
    latest = _latest(view, "exemplars")
    if latest is None or not isinstance(latest[1], dict):
        return []
    return [e["attributes"] for e in latest[1].get("exemplars", []) if e.get("attributes")]


def _modal(attributes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The most common value of each varied attribute (ties: the first seen)."""
    out = dict(_DEFAULTS)
    for name in VARIED:
        counts = Counter(a[name] for a in attributes if a.get(name) in _VALUES[name])
        if counts:
            out[name] = counts.most_common(1)[0][0]
    return out


def _contrasts(name: str, modal: str, seen: set[str], n: int) -> list[str]:
    """n values of an attribute other than `modal`, preferring those no exemplar has, spread
    over the vocabulary."""
    others = [v for v in _VALUES[name] if v != modal and v not in seen]
    others += [v for v in _VALUES[name] if v != modal and v in seen]
    step = max(1, len(others) // n)
    return others[::step][:n]


@dataclass(frozen=True)
class _Render:
    """One rendered image as the render result reports it."""

    id: str
    activation: float
    attributes: dict[str, Any]


def _renders(view: ConversationView) -> list[_Render]:
    latest = _latest(view, "render")
    if latest is None or not isinstance(latest[1], dict):
        return []
    return [
        _Render(i["id"], float(i["activation"]), dict(i.get("attributes") or {}))
        for i in latest[1].get("images", [])
    ]


@dataclass(frozen=True)
class _Effect:
    """A controlled comparison of one attribute: its best and worst render and their contrast."""

    name: str
    best: _Render
    worst: _Render
    contrast: float

    @property
    def best_value(self) -> str:
        return str(self.best.attributes.get(self.name))

    @property
    def worst_value(self) -> str:
        return str(self.worst.attributes.get(self.name))


def _contrast(high: float, low: float) -> float:
    """(high - low) / (|high| + |low|), in [0, 1] for high >= low; 0 when both are 0."""
    scale = abs(high) + abs(low)
    return max(0.0, min(1.0, (high - low) / scale)) if scale > 0 else 0.0


def _effects(renders: Sequence[_Render]) -> dict[str, _Effect]:
    """Per varied attribute, the first render (the base) against the renders that differ from it
    in that attribute only."""
    if not renders:
        return {}
    base = renders[0]

    def differs(r: _Render) -> list[str]:
        return [n for n in VARIED if r.attributes.get(n) != base.attributes.get(n)]

    out = {}
    for name in VARIED:
        group = [base] + [r for r in renders[1:] if differs(r) == [name]]
        if len(group) >= 2:
            best = max(group, key=lambda r: (r.activation, r.id))
            worst = min(group, key=lambda r: (r.activation, r.id))
            out[name] = _Effect(name, best, worst, _contrast(best.activation, worst.activation))
    return out


def _label(effects: Mapping[str, _Effect]) -> tuple[str, _Effect]:
    """(label, the strongest effect): the attributes whose change moves the activation at least
    half as much as the strongest one's, in words."""
    main = max(effects.values(), key=lambda e: (e.contrast, e.name))
    matters = {
        n for n, e in effects.items() if e.contrast > 0 and e.contrast >= 0.5 * main.contrast
    }
    words = [effects["color"].best_value] if "color" in matters else []
    words.append(effects["shape"].best_value if "shape" in matters else "object")
    label = " ".join(words)
    if "texture" in matters:
        label += f" with {effects['texture'].best_value} texture"
    return label, main


def _words(attributes: Mapping[str, Any]) -> str:
    return " ".join(str(attributes[n]) for n in VARIED if n in attributes)


def _line(r: _Render) -> str:
    return f"{r.id} ({_words(r.attributes)}) = {r.activation:.4g}"


@dataclass(frozen=True)
class ExperimenterPolicy:
    """exemplars -> contrasting renders -> one controlled edit -> finish (see the module)."""

    k: int = 6
    """Exemplars asked for."""
    contrasts: int = 3
    """Values tried per varied attribute besides the exemplars' most common one."""
    size: int = 96
    """Side of the rendered images, pixels."""

    def __call__(self, view: ConversationView) -> Action:
        latest = _latest(view)
        phase = latest[0] if latest is not None else None
        if phase is None and "exemplars" in view.tools:
            return CallTool(name="exemplars", arguments={"k": self.k})
        if phase in (None, "exemplars"):
            return CallTool(name="render", arguments={"specs": self._specs(view)})
        if phase == "render":
            return self._edit(view)
        return self._finish(view)

    def _scene(self, attributes: Mapping[str, str]) -> dict[str, Any]:
        main = {name: attributes[name] for name in VARIED} | {"size": 0.5}
        return {
            "version": vocab.SPEC_VERSION,
            "objects": [main],
            "background": "plain",
            "width": self.size,
            "height": self.size,
            "seed": 0,
        }

    def _specs(self, view: ConversationView) -> list[dict[str, Any]]:
        """The exemplars' most common values, then each varied attribute changed alone."""
        seen_attributes = _exemplar_attributes(view)
        modal = _modal(seen_attributes)
        specs = [self._scene(modal)]
        for name in VARIED:
            seen = {str(a.get(name)) for a in seen_attributes}
            for value in _contrasts(name, modal[name], seen, self.contrasts):
                specs.append(self._scene({**modal, name: value}))
        return specs

    def _edit(self, view: ConversationView) -> Action:
        """Change the strongest attribute of the best render to its worst value."""
        renders = _renders(view)
        effects = _effects(renders)
        if not effects:
            return self._finish(view)
        _, main = _label(effects)
        best = max(renders, key=lambda r: (r.activation, r.id))
        change = main.worst_value
        if best.attributes.get(main.name) == change:
            change = main.best_value
        return CallTool(name="edit", arguments={"image": best.id, "changes": {main.name: change}})

    def _finish(self, view: ConversationView) -> Action:
        effects = _effects(_renders(view))
        if not effects:
            modal = _modal(_exemplar_attributes(view))
            return CallTool(
                name="finish",
                arguments={
                    "label": f"{modal['color']} {modal['shape']}",
                    "description": "The exemplars' most common attributes; no experiment "
                    "results were available to test them.",
                    "confidence": 0.2,
                    "evidence": [],
                },
            )
        label, main = _label(effects)
        contrasts = [main.contrast]
        evidence = [_line(main.best), _line(main.worst)]
        edited = _latest(view, "edit")
        if edited is not None and isinstance(edited[1], dict) and edited[1].get("parent"):
            image, parent = edited[1]["images"][0], edited[1]["parent"]
            high, low = sorted((float(parent["activation"]), float(image["activation"])))[::-1]
            contrasts.append(_contrast(high, low))
            evidence.append(
                f"edit {parent['id']} -> {image['id']} ({main.name}="
                f"{image.get('attributes', {}).get(main.name)}): "
                f"{parent['activation']:.4g} -> {image['activation']:.4g}"
            )
        description = (
            f"Responds most to {label}: with everything else equal, {main.name}="
            f"{main.best_value} gives {main.best.activation:.4g} and {main.name}="
            f"{main.worst_value} gives {main.worst.activation:.4g}."
        )
        return CallTool(
            name="finish",
            arguments={
                "label": label[:80],
                "description": description,
                "confidence": round(sum(contrasts) / len(contrasts), 2),
                "evidence": evidence,
            },
        )


TEST_PROMPTS: tuple[str, ...] = (
    "a dog lying on a lawn",
    "a close-up photo of a puppy in the grass",
    "two dogs running across a green field",
)
"""The `photo-experimenter`'s prompts for testing its label on generated images."""


@dataclass(frozen=True)
class PhotoExperimenter:
    """What an agent does on photographs (MAIA's experiments): the exemplars (plain and masked),
    two of them described and three summarized, the top one's firing region at full resolution,
    images generated from text, the top exemplar edited by
    instruction, then a label from the generated image that moved the unit most, with
    `TEST_PROMPTS` to test it on (when a generator is offered). Each step runs
    once when its tool is offered; a step whose call failed is not retried. Requests without
    tools (the describe model's) get numbered captions or a one-sentence summary."""

    k: int = 4
    """Exemplars asked for."""
    prompts: tuple[str, ...] = ("a photo of a dog on grass", "a photo of an empty white room")
    """Prompts of the text2image step."""
    instruction: str = "remove the background"
    """The edit of the top exemplar."""

    def _tried(self, view: ConversationView, name: str) -> bool:
        return any(r.name == name for r in view.tool_results) or any(
            f"{name}(" in text for text in view.user_texts
        )

    def __call__(self, view: ConversationView) -> Action:
        if not view.tools:  # a describe or summarize request (no tools offered): the captioner
            return Reply(text=_caption(view))
        if "exemplars" in view.tools and not self._tried(view, "exemplars"):
            masks = "crop" in view.tools  # offered with masked exemplars: ask for both views
            args: dict[str, Any] = {"k": self.k, "view": "both"} if masks else {"k": self.k}
            return CallTool(name="exemplars", arguments=args)
        if "describe" in view.tools and not self._tried(view, "describe"):
            return CallTool(name="describe", arguments={"images": ["ex-0", "ex-1"]})
        if "summarize" in view.tools and not self._tried(view, "summarize"):
            ids = [f"ex-{i}" for i in range(min(self.k, 3))]
            return CallTool(name="summarize", arguments={"images": ids})
        if "crop" in view.tools and not self._tried(view, "crop"):
            return CallTool(name="crop", arguments={"image": "ex-0"})
        if "text2image" in view.tools and not self._tried(view, "text2image"):
            return CallTool(
                name="text2image", arguments={"prompts": list(self.prompts)},
                text="Hypothesis: the unit responds to animals on grass. Testing it with "
                "generated images of a dog on grass and of an empty room.",
            )  # fmt: skip
        if "edit" in view.tools and not self._tried(view, "edit"):
            return CallTool(
                name="edit", arguments={"image": "ex-0", "instruction": self.instruction}
            )
        return self._finish(view)

    def _finish(self, view: ConversationView) -> Action:
        evidence: list[str] = []
        label, best = "the top exemplars' content", float("-inf")
        generated = _latest(view, "text2image")
        if generated is not None:
            for image in generated[1].get("images", []):
                evidence.append(f"{image['id']} ({image['prompt']}): {image['activation']:.4g}")
                if float(image["activation"]) > best:
                    best, label = float(image["activation"]), str(image["prompt"])
        summary = _latest(view, "summarize")
        if summary is not None:
            evidence.append(f"summary: {summary[1]['summary']}"[:200])
        edited = _latest(view, "edit")
        if edited is not None and edited[1].get("parent"):
            image, parent = edited[1]["images"][0], edited[1]["parent"]
            evidence.append(
                f"edit {parent['id']} -> {image['id']} ({image.get('prompt')}): "
                f"{parent['activation']:.4g} -> {image['activation']:.4g}"
            )
        arguments: dict[str, Any] = {
            "label": label[:80],
            "description": "The generated image that drove the unit most, and how editing "
            "the top exemplar changed its activation.",
            "confidence": 0.3,
            "evidence": evidence[:20],
        }
        if "text2image" in view.tools:  # `finish` then takes prompts to test the label on
            arguments["test_prompts"] = list(TEST_PROMPTS)
        return CallTool(name="finish", arguments=arguments)


def _caption(view: ConversationView) -> str:
    """The stand-in captioner's answer: numbered captions for a describe request, one sentence
    for a summarize request (told apart by the request's text)."""
    if any("in common" in text for text in view.user_texts):
        return f"All {view.images} images show a furry animal outdoors."
    return "\n".join(
        f"{i + 1}: a photo with a bright patch, image {i + 1}" for i in range(view.images)
    )


@dataclass(frozen=True)
class NeverFinishes:
    """Keeps calling valid tools (exemplars, measure) and never finishes."""

    def __call__(self, view: ConversationView) -> Action:
        if len(view.tool_results) % 2 == 0 and "exemplars" in view.tools:
            return CallTool(name="exemplars", arguments={"k": 1})
        return CallTool(name="measure", arguments={"images": ["ex-0"]})


def _invalid_so_far(view: ConversationView) -> int:
    """Refused calls so far: error results shown, plus those in the summary of older rounds."""
    shown = sum(1 for r in view.tool_results if r.is_error)
    summarised = sum(text.count("-> invalid:") for text in view.user_texts)
    return shown + summarised


@dataclass(frozen=True)
class InvalidThenValid:
    """First arguments that are not JSON, then a schema violation, then `inner` (valid).

    Gemini cannot carry arguments that are not a JSON object (its server answers with no call at
    all), so each step also counts as done once its round has passed."""

    inner: Policy = field(default_factory=ExperimenterPolicy)

    def __call__(self, view: ConversationView) -> Action:
        refused = max(_invalid_so_far(view), min(view.rounds, 2))
        if refused == 0:
            return CallTool(name="exemplars", raw_arguments="{not json")
        if refused == 1:
            bad_scene = {"version": 1, "objects": [{"shape": "blob", "color": "red"}]}
            return CallTool(name="render", arguments={"specs": [bad_scene], "extra": True})
        return self.inner(view)


@dataclass(frozen=True)
class TextAnswer:
    """Looks at the exemplars, then answers with JSON text in a fence instead of calling finish."""

    def __call__(self, view: ConversationView) -> Action:
        if _latest(view, "exemplars") is None and "exemplars" in view.tools:
            return CallTool(name="exemplars", arguments={"k": 6})
        modal = _modal(_exemplar_attributes(view))
        answer = {
            "label": f"{modal['color']} {modal['shape']}",
            "description": "The most common colour and shape of the exemplars.",
            "confidence": 0.5,
        }
        return Reply(text=f"My answer:\n```json\n{json.dumps(answer)}\n```")


@dataclass(frozen=True)
class Garbage:
    """Always answers with text that holds no final answer."""

    text: str = "It likes things, I think. Hard to say, really!"

    def __call__(self, view: ConversationView) -> Action:
        return Reply(text=self.text)
