"""The image tools an LLM explainer calls: render scenes, edit them, make images from text.

Every tool returns `ImageRef`s whose ids (`img-000012`) later calls can refer to: `edit` by id
re-renders the stored scene with the changes. Images live in an `ImageStore` with their scene spec
and ground-truth attributes. Rendering goes through any `Renderer` (one method, `render_many`):
`LocalRenderer` (in process), a `RenderClient`, a `launcher.SupervisedRenderer` or a Ray
`RenderPool`. `text2image` calls any `TextToImage` backend (e.g. a diffusion pipeline).

Arguments are checked like a JSON Schema (types, counts, names and values, the scene schema of
`unity_pool.schema`); a bad one raises `ToolError`, whose message is written for the model: where
the problem is, what is allowed, what was given. Nothing a model sends is ever executed.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image

from unity_pool.client import RenderFailed, RenderResult
from unity_pool.edit import edit as edit_scene
from unity_pool.edit import editable_attributes
from unity_pool.procedural.backend import encode_png
from unity_pool.procedural.draw import render as draw
from unity_pool.scene import Scene, SceneError

Source = Literal["render", "edit", "text2image", "visualization"]

MAX_PROMPT_CHARS = 1000
"""Longest text2image prompt accepted."""

MAX_PROMPTS = 16
"""Most prompts one text2image call may carry."""


class ToolError(ValueError):
    """Bad tool arguments: says where, what is allowed and what was given (for the model)."""


class ToolUnavailable(RuntimeError):
    """The tool needs a backend that is not configured; says which one and how to configure it."""


class Renderer(Protocol):
    """Anything that renders a batch of scene specs, in order."""

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        """One result per scene; raises `SceneError` for an invalid spec."""
        ...


class TextToImage(Protocol):
    """A text-to-image backend (the diffusion pipeline of `unity_pool.diffusion`, a fake)."""

    def generate(self, prompts: Sequence[str], seed: int) -> list[Image.Image]:
        """One RGB image per prompt, in order; the same prompts and seed give the same images."""
        ...


class ImageEditor(Protocol):
    """An instruction-based image editor (the diffusion backend's InstructPix2Pix, a fake)."""

    def edit(self, image: Image.Image, instruction: str, seed: int) -> Image.Image:
        """`image` edited as `instruction` says ("make the dog a cat"), RGB."""
        ...


class LocalRenderer:
    """The procedural renderer in this process: the same PNG bytes as its server, no TCP."""

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        out = []
        for spec in scenes:
            scene = spec if isinstance(spec, Scene) else Scene.from_dict(spec)
            start = time.perf_counter()
            image, attributes = draw(scene)
            data = encode_png(image)
            out.append(
                RenderResult(
                    data=data,
                    format="png",
                    width=scene.width,
                    height=scene.height,
                    attributes=attributes,
                    render_ms=(time.perf_counter() - start) * 1000,
                    pixels=image if image.mode == "RGB" else None,
                )
            )
        return out


@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """What a tool returns for one image: an id to refer to it and what is known about it."""

    id: str
    """Store id, `img-` and six or more digits; valid for later calls on the same store."""
    source: Source
    """The tool that made it."""
    width: int
    """Pixels."""
    height: int
    """Pixels."""
    attributes: dict[str, Any] | None
    """Ground-truth attributes (`vocab.ATTRIBUTES`) of a rendered image; None for text2image."""
    scene: dict[str, Any] | None
    """The scene spec it was rendered from; None for text2image."""
    parent: str | None = None
    """For an edit of a stored image: that image's id."""
    prompt: str | None = None
    """For text2image: the prompt."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for a tool result (fields that do not apply are left out)."""
        out: dict[str, Any] = {"id": self.id, "source": self.source}
        out.update(width=self.width, height=self.height)
        for name in ("attributes", "scene", "parent", "prompt"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, kw_only=True)
class StoredImage:
    """One image of a store: its reference and its encoded bytes."""

    ref: ImageRef
    """Id, source, attributes, scene."""
    data: bytes
    """The encoded image."""
    format: str = "png"
    """Encoding of `data`."""
    pixels: Image.Image | None = field(default=None, repr=False, compare=False)
    """The RGB image `data` encodes, when the renderer handed it over (no decoding needed)."""

    def image(self) -> Image.Image:
        """The decoded image, RGB."""
        if self.pixels is not None:
            return self.pixels.copy()
        with Image.open(io.BytesIO(self.data)) as im:
            return im.convert("RGB")


class ImageStore:
    """Images by id (`img-000000`, `img-000001`, ... in order of arrival). Thread-safe."""

    def __init__(self, *, prefix: str = "img") -> None:
        self.prefix = prefix
        self._images: dict[str, StoredImage] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def ids(self) -> list[str]:
        """Every id, oldest first."""
        return list(self._images)

    def add(
        self,
        data: bytes,
        *,
        source: Source,
        width: int,
        height: int,
        format: str = "png",
        attributes: dict[str, Any] | None = None,
        scene: Scene | None = None,
        parent: str | None = None,
        prompt: str | None = None,
        pixels: Image.Image | None = None,
    ) -> ImageRef:
        """Store an encoded image under the next id and return its reference; `pixels`, when
        given, is the RGB image `data` encodes (kept, so it is not decoded again)."""
        with self._lock:
            image_id = f"{self.prefix}-{len(self._images):06d}"
            ref = ImageRef(
                id=image_id,
                source=source,
                width=width,
                height=height,
                attributes=attributes,
                scene=scene.to_dict() if scene is not None else None,
                parent=parent,
                prompt=prompt,
            )
            self._images[image_id] = StoredImage(ref=ref, data=data, format=format, pixels=pixels)
        return ref

    def get(self, image_id: str) -> StoredImage:
        """The stored image; `ToolError` naming the known ids when there is none."""
        try:
            return self._images[image_id]
        except (KeyError, TypeError):
            pass
        ids = self.ids()
        known = f"{ids[0]} .. {ids[-1]}" if ids else "none yet"
        raise ToolError(
            f"unknown image id {image_id!r}; expected an id returned by an earlier render, edit or "
            f"text2image call (known: {known}). Fix: use one of those ids."
        )

    def image(self, image_id: str) -> Image.Image:
        """The decoded RGB image."""
        return self.get(image_id).image()

    def scene(self, image_id: str) -> Scene:
        """The scene an image was rendered from; `ToolError` for a text2image image."""
        ref = self.get(image_id).ref
        if ref.scene is None:
            raise ToolError(
                f"{image_id} was made by {ref.source} from a prompt and has no scene spec; only "
                "rendered images can be edited. Fix: edit an id returned by render or edit, or "
                "pass a scene spec."
            )
        return Scene.from_dict(ref.scene)


def _rendered(renderer: Renderer, scenes: list[Scene]) -> list[RenderResult]:
    try:
        results = renderer.render_many(scenes)
    except SceneError as err:
        raise ToolError(f"the renderer rejected a scene: {err}") from err
    if len(results) != len(scenes):
        raise RenderFailed(f"the renderer returned {len(results)} images for {len(scenes)} scenes")
    return results


def _count(name: str, value: object, *, limit: int) -> list[Any]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= limit:
        got = f"{len(value)} items" if isinstance(value, list | tuple) else type(value).__name__
        raise ToolError(f"{name}: expected a list of 1 to {limit} items; got {got}.")
    return list(value)


def _scene(where: str, spec: object) -> Scene:
    if isinstance(spec, Scene):
        return spec
    if not isinstance(spec, Mapping):
        raise ToolError(
            f"{where}: expected a scene spec (a JSON object); got {type(spec).__name__}."
        )
    try:
        return Scene.from_dict(spec)
    except SceneError as err:
        raise ToolError(f"{where}: {err}") from err


def render(
    specs: Sequence[Mapping[str, Any] | Scene],
    *,
    store: ImageStore,
    renderer: Renderer,
    max_images: int = 64,
) -> list[ImageRef]:
    """Render 1 to `max_images` scene specs; one stored image per spec, in order."""
    scenes = [
        _scene(f"specs[{i}]", s) for i, s in enumerate(_count("specs", specs, limit=max_images))
    ]
    results = _rendered(renderer, scenes)
    return [
        store.add(
            r.data,
            source="render",
            width=r.width,
            height=r.height,
            format=r.format,
            attributes=dict(r.attributes),
            scene=scene,
            pixels=r.pixels,
        )
        for scene, r in zip(scenes, results, strict=True)
    ]


def edit(
    target: str | Mapping[str, Any] | Scene,
    changes: Mapping[str, Any],
    *,
    store: ImageStore,
    renderer: Renderer,
) -> ImageRef:
    """Re-render a stored image (by id) or a scene spec with attributes changed (see
    `unity_pool.edit`: everything else, seed included, stays the same)."""
    parent = target if isinstance(target, str) else None
    scene = store.scene(target) if isinstance(target, str) else _scene("image", target)
    if not isinstance(changes, Mapping) or not changes:
        allowed = ", ".join(editable_attributes())
        raise ToolError(
            f"changes: expected an object of attribute -> new value (attributes: {allowed}); "
            f"got {changes!r:.100}."
        )
    try:
        edited = edit_scene(scene, changes)
    except ValueError as err:
        raise ToolError(f"changes: {err}") from err
    (result,) = _rendered(renderer, [edited])
    return store.add(
        result.data,
        source="edit",
        width=result.width,
        height=result.height,
        format=result.format,
        attributes=dict(result.attributes),
        scene=edited,
        parent=parent,
        pixels=result.pixels,
    )


def text2image(
    prompts: Sequence[str],
    *,
    store: ImageStore,
    backend: TextToImage | None,
    seed: int = 0,
    max_images: int = MAX_PROMPTS,
) -> list[ImageRef]:
    """Generate one image per prompt with the text-to-image backend; no attributes are known."""
    if backend is None:
        raise ToolUnavailable(
            "text2image needs a text-to-image backend and none is configured. Fix: pass "
            "text_to_image=<an object with generate(prompts, seed) -> list[PIL.Image]> (the "
            "diffusion backend of unity_pool.diffusion) to RenderTools, or do not offer this tool."
        )
    prompts = _count("prompts", prompts, limit=max_images)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise ToolError(
                f"prompts[{i}]: expected a non-empty string of at most {MAX_PROMPT_CHARS} "
                f"characters; got {prompt!r:.80}."
            )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ToolError(f"seed: expected an integer >= 0; got {seed!r}.")
    images = backend.generate(prompts, seed)
    if len(images) != len(prompts):
        raise RenderFailed(
            f"text-to-image backend {type(backend).__name__} returned {len(images)} images for "
            f"{len(prompts)} prompts"
        )
    refs = []
    for prompt, image in zip(prompts, images, strict=True):
        rgb = image.convert("RGB")
        refs.append(
            store.add(
                encode_png(rgb),
                source="text2image",
                width=rgb.width,
                height=rgb.height,
                prompt=prompt,
            )
        )
    return refs


def edit_image(
    image: Image.Image,
    instruction: str,
    *,
    store: ImageStore,
    editor: ImageEditor | None,
    parent: str | None = None,
    seed: int = 0,
) -> ImageRef:
    """Edit any image (a photograph too) as `instruction` says with the image editor; the result
    is stored with `parent` (the edited image's id) and the instruction as its prompt."""
    if editor is None:
        raise ToolUnavailable(
            "editing an image by instruction needs an image editor and none is configured. Fix: "
            "pass image_editor=<an object with edit(image, instruction, seed) -> PIL.Image> (the "
            "diffusion backend of unity_pool.diffusion) to RenderTools, or give `changes`."
        )
    if not isinstance(instruction, str) or not instruction.strip() or len(instruction) > MAX_PROMPT_CHARS:
        raise ToolError(
            f"instruction: expected a non-empty string of at most {MAX_PROMPT_CHARS} characters; "
            f"got {instruction!r:.80}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ToolError(f"seed: expected an integer >= 0; got {seed!r}.")
    rgb = editor.edit(image, instruction, seed).convert("RGB")
    return store.add(
        encode_png(rgb), source="edit", width=rgb.width, height=rgb.height, parent=parent,
        prompt=instruction,
    )  # fmt: skip


def _scene_schema() -> dict[str, Any]:
    from unity_pool.schema import load_schema

    return {k: v for k, v in load_schema().items() if k not in ("$schema", "$id", "title")}


def _changes_schema() -> dict[str, Any]:
    properties = {
        name: {"enum": list(values)} if values is not None else {"type": "number"}
        for name, values in editable_attributes().items()
    }
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "minProperties": 1,
        "description": "Attributes of the main object (or scene) to change, with new values.",
    }


class RenderTools:
    """The tools bound to one store, renderer and (optional) text-to-image backend.

    `definitions()` describes them as JSON Schema for an LLM API; `call(name, arguments)` runs a
    structured tool call and returns JSON-ready data.
    """

    def __init__(
        self,
        *,
        store: ImageStore | None = None,
        renderer: Renderer | None = None,
        text_to_image: TextToImage | None = None,
        image_editor: ImageEditor | None = None,
        max_images: int = 64,
    ) -> None:
        """`renderer` defaults to `LocalRenderer()`; `max_images` bounds the images per call.
        With `image_editor`, `edit` also takes an `instruction` for any stored image."""
        self.store = store if store is not None else ImageStore()
        self.renderer: Renderer = renderer if renderer is not None else LocalRenderer()
        self.text_to_image = text_to_image
        self.image_editor = image_editor
        self.max_images = max_images

    def render(self, specs: Sequence[Mapping[str, Any] | Scene]) -> list[ImageRef]:
        """See the module function `render`."""
        return render(specs, store=self.store, renderer=self.renderer, max_images=self.max_images)

    def edit(self, target: str | Mapping[str, Any] | Scene, changes: Mapping[str, Any]) -> ImageRef:
        """See the module function `edit`."""
        return edit(target, changes, store=self.store, renderer=self.renderer)

    def edit_image(
        self, image: Image.Image, instruction: str, *, parent: str | None = None, seed: int = 0
    ) -> ImageRef:
        """See the module function `edit_image`."""
        return edit_image(
            image, instruction, store=self.store, editor=self.image_editor, parent=parent,
            seed=seed,
        )  # fmt: skip

    def text2image(self, prompts: Sequence[str], seed: int = 0) -> list[ImageRef]:
        """See the module function `text2image`."""
        return text2image(
            prompts,
            store=self.store,
            backend=self.text_to_image,
            seed=seed,
            max_images=min(self.max_images, MAX_PROMPTS),
        )

    def definitions(self) -> list[dict[str, Any]]:
        """One `{"name", "description", "parameters"}` per available tool (text2image only with
        a backend); `parameters` is a JSON Schema object."""
        scene = _scene_schema()
        tools: list[dict[str, Any]] = [
            {
                "name": "render",
                "description": "Render synthetic scenes; returns one image id with its "
                "ground-truth attributes per scene spec, in order.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "specs": {
                            "type": "array",
                            "items": scene,
                            "minItems": 1,
                            "maxItems": self.max_images,
                        },
                    },
                    "required": ["specs"],
                    "additionalProperties": False,
                },
            },
            {
                "name": "edit",
                "description": "Re-render a stored image (by id) or a scene spec with some "
                "attributes changed and everything else, seed included, the same.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "string",
                            "pattern": "^img-[0-9]+$",
                            "description": "Id of a rendered image.",
                        },
                        "scene": scene,
                        "changes": _changes_schema(),
                    },
                    "required": ["changes"],
                    "additionalProperties": False,
                    "description": "Give exactly one of `image` and `scene`.",
                },
            },
        ]
        if self.image_editor is not None:
            edit_def = tools[1]["parameters"]
            tools[1]["description"] = (
                "Edit an image. With `changes`: re-render a stored rendered image (by id) or a "
                "scene spec with some attributes changed and everything else, seed included, the "
                "same. With `instruction`: edit any stored image (photographs too) as the "
                "instruction says, e.g. 'make the dog a cat' or 'remove the grass'."
            )
            edit_def["properties"] |= {
                "instruction": {
                    "type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS,
                    "description": "What to change in the image `image` (not with `changes`).",
                },
                "seed": {"type": "integer", "minimum": 0, "default": 0},
            }  # fmt: skip
            edit_def["required"] = []
            edit_def["description"] = (
                "Give `image` with `instruction`, or exactly one of `image` and `scene` with "
                "`changes`."
            )
        if self.text_to_image is not None:
            tools.append(
                {
                    "name": "text2image",
                    "description": "Generate one natural image per prompt (no ground truth).",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "prompts": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": min(self.max_images, MAX_PROMPTS),
                                "items": {
                                    "type": "string",
                                    "minLength": 1,
                                    "maxLength": MAX_PROMPT_CHARS,
                                },
                            },
                            "seed": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        "required": ["prompts"],
                        "additionalProperties": False,
                    },
                }
            )
        return tools

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run one tool call; returns `{"images": [ref, ...]}`. Raises `ToolError` for an unknown
        tool or bad arguments, `ToolUnavailable` for text2image without a backend."""
        signatures = {
            "render": ({"specs"}, set()),
            "edit": ({"changes"}, {"image", "scene"}),
            "text2image": ({"prompts"}, {"seed"}),
        }
        if self.image_editor is not None:
            signatures["edit"] = (set(), {"image", "scene", "changes", "instruction", "seed"})
        if name not in signatures:
            raise ToolError(f"unknown tool {name!r}; expected one of {', '.join(signatures)}.")
        if not isinstance(arguments, Mapping):
            raise ToolError(f"{name}: arguments must be a JSON object; got {arguments!r:.100}.")
        required, optional = signatures[name]
        allowed = ", ".join(sorted(required | optional))
        unknown = sorted(set(arguments) - required - optional)
        missing = sorted(required - set(arguments))
        if unknown or missing:
            problem = f"unknown {unknown}" if unknown else f"missing {missing}"
            raise ToolError(f"{name}: {problem} argument(s); allowed: {allowed}.")
        if name == "render":
            refs = self.render(arguments["specs"])
        elif name == "edit" and "instruction" in arguments:
            target = arguments.get("image")
            if "changes" in arguments or "scene" in arguments or not isinstance(target, str):
                raise ToolError(
                    "edit: an `instruction` goes with `image` (the id of a stored image) alone, "
                    "without `changes` or `scene`."
                )
            image = self.store.image(target)
            seed = arguments.get("seed", 0)
            refs = [self.edit_image(image, arguments["instruction"], parent=target, seed=seed)]
        elif name == "edit":
            if "changes" not in arguments:
                raise ToolError("edit: give `changes` (with `image` or `scene`) or `instruction`.")
            if ("image" in arguments) == ("scene" in arguments):
                raise ToolError("edit: give exactly one of `image` (an id) and `scene` (a spec).")
            target = arguments.get("image", arguments.get("scene"))
            if "image" in arguments and not isinstance(target, str):
                raise ToolError(f"edit: image: expected an id string; got {target!r:.80}.")
            refs = [self.edit(target, arguments["changes"])]
        else:
            refs = self.text2image(arguments["prompts"], seed=arguments.get("seed", 0))
        return {"images": [ref.to_dict() for ref in refs]}
