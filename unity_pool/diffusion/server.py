"""The diffusion render server: the render protocol plus two ops, `generate` and `edit`.

`DiffusionServer` is a `RenderServer` (same framing, `ping`, `render`, errors, threading) that
also answers
  {"op": "generate", "prompts": [...], "seed": 0, "width": 512, "height": 512}
  {"op": "edit", "instruction": "...", "seed": 0} + one blob, the input image
with one PNG per output image, and lists its ops and models in the `ping` answer. Requests are
parsed into frozen records by pure functions (`parse_generate`, `parse_edit`). See
docs/diffusion.md for the wire format.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from unity_pool import protocol
from unity_pool.diffusion.backend import DiffusionBackend
from unity_pool.diffusion.config import (
    MAX_SEED,
    MAX_SIDE,
    SIZE_MULTIPLE,
    check_int,
    check_number,
    check_side,
)
from unity_pool.procedural.backend import encode_png
from unity_pool.server import RenderServer

log = logging.getLogger(__name__)

MAX_PROMPTS_PER_REQUEST = 64
"""A generate request with more prompts is answered `too_large`."""

BASE_OPS = ("ping", "render")
"""Ops every render server answers (`unity_pool.server.RenderServer`)."""

_ENVELOPE = frozenset({"protocol", "op", "id", "blobs"})
"""Header keys every request may carry besides its op's own fields."""


class RequestError(ValueError):
    """A generate/edit request with a missing or bad field; answered `bad_request`."""

    def __init__(self, message: str, *, path: str | None = None, error_type: str = "") -> None:
        super().__init__(message)
        self.path = path
        """The header field at fault, e.g. `prompts[2]`."""
        self.error_type = error_type or protocol.BAD_REQUEST
        """The `protocol` error type to answer with."""


@dataclass(frozen=True, kw_only=True)
class GenerateRequest:
    """A parsed `generate` request."""

    prompts: tuple[str, ...]
    """One image per prompt, in order."""
    seed: int
    """Prompt `i` is sampled with seed `seed + i` (unless `seeds` is given)."""
    seeds: tuple[int, ...] | None
    """One seed per prompt (several callers' prompts batched in one request), or None."""
    width: int | None
    """Pixels, a multiple of 8; None takes the server's config."""
    height: int | None
    """Pixels, a multiple of 8; None takes the server's config."""
    steps: int | None
    """Denoising steps; None takes the server's config."""
    guidance_scale: float | None
    """Classifier-free guidance; None takes the server's config."""


@dataclass(frozen=True, kw_only=True)
class EditRequest:
    """A parsed `edit` request."""

    image: Image.Image
    """The input image (decoded from the request's blob), RGB."""
    instruction: str
    """What to change, e.g. "make the star blue"."""
    seed: int
    """Seed of the sampling noise."""
    steps: int | None
    """Denoising steps; None takes the server's config."""
    guidance_scale: float | None
    """Instruction guidance; None takes the server's config."""
    image_guidance_scale: float | None
    """Image guidance; None takes the server's config."""


def _check_fields(header: Mapping[str, Any], op: str, allowed: Sequence[str]) -> None:
    unknown = sorted(str(k) for k in header if k not in _ENVELOPE and k not in allowed)
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(unknown)} in a {op} request; expected some of "
            f"{', '.join(allowed)}",
            path=unknown[0],
        )


def _optional(header: Mapping[str, Any], name: str, check: Callable[[str, Any], Any]) -> Any:
    if header.get(name) is None:
        return None
    try:
        return check(name, header[name])
    except ValueError as err:
        raise RequestError(str(err), path=name) from err


def _seed(header: Mapping[str, Any]) -> int:
    seed = _optional(header, "seed", lambda n, v: check_int(n, v, 0, MAX_SEED))
    return 0 if seed is None else int(seed)


def _seeds(header: Mapping[str, Any], n: int) -> tuple[int, ...] | None:
    raw = header.get("seeds")
    if raw is None:
        return None
    if "seed" in header:
        raise RequestError("a generate request has `seed` or `seeds`, not both", path="seeds")
    if not isinstance(raw, list) or len(raw) != n:
        raise RequestError(
            f"seeds: expected a list of one integer per prompt ({n}); got {raw!r:.200}",
            path="seeds",
        )
    try:
        return tuple(check_int(f"seeds[{i}]", v, 0, MAX_SEED) for i, v in enumerate(raw))
    except ValueError as err:
        raise RequestError(str(err), path="seeds") from err


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"{name}: expected a non-empty string; got {value!r:.200}", path=name)
    return value


_GENERATE_FIELDS = ("prompts", "prompt", "seed", "seeds", "width", "height", "steps", "guidance_scale")
_EDIT_FIELDS = ("instruction", "seed", "steps", "guidance_scale", "image_guidance_scale")


def parse_generate(header: Mapping[str, Any]) -> GenerateRequest:
    """The `generate` request in `header`; raises `RequestError` naming the bad field."""
    _check_fields(header, "generate", _GENERATE_FIELDS)
    if "prompts" in header and "prompt" in header:
        raise RequestError("a generate request has `prompt` or `prompts`, not both", path="prompt")
    if "prompt" in header:
        prompts = [_text("prompt", header["prompt"])]
    else:
        raw = header.get("prompts")
        if not isinstance(raw, list) or not raw:
            raise RequestError(
                f"a generate request needs `prompts` (a non-empty list of strings) or `prompt` "
                f"(a string); got prompts={raw!r:.200}",
                path="prompts",
            )
        if len(raw) > MAX_PROMPTS_PER_REQUEST:
            raise RequestError(
                f"{len(raw)} prompts in one request; expected at most {MAX_PROMPTS_PER_REQUEST}. "
                "Fix: split them over several requests.",
                path="prompts",
                error_type=protocol.TOO_LARGE,
            )
        prompts = [_text(f"prompts[{i}]", p) for i, p in enumerate(raw)]
    seed = _seed(header)
    if seed + len(prompts) - 1 > MAX_SEED:
        raise RequestError(f"seed: expected seed + len(prompts) - 1 <= {MAX_SEED}", path="seed")
    return GenerateRequest(
        prompts=tuple(prompts),
        seed=seed,
        seeds=_seeds(header, len(prompts)),
        width=_optional(header, "width", check_side),
        height=_optional(header, "height", check_side),
        steps=_optional(header, "steps", lambda n, v: check_int(n, v, 1, 1000)),
        guidance_scale=_optional(header, "guidance_scale", lambda n, v: check_number(n, v, 0, 50)),
    )


def parse_edit(header: Mapping[str, Any], blobs: Sequence[bytes]) -> EditRequest:
    """The `edit` request in a frame's header and blobs (exactly one: the input image)."""
    _check_fields(header, "edit", _EDIT_FIELDS)
    if len(blobs) != 1:
        raise RequestError(
            f"an edit request carries exactly one blob, the input image (PNG); got {len(blobs)}",
            path="blobs",
        )
    try:
        with Image.open(io.BytesIO(blobs[0])) as opened:
            width, height = opened.size
            if not (SIZE_MULTIPLE <= width <= MAX_SIDE and SIZE_MULTIPLE <= height <= MAX_SIDE):
                raise RequestError(
                    f"input image: expected sides in {SIZE_MULTIPLE}..{MAX_SIDE} pixels; got "
                    f"{width}x{height}",
                    path="blobs",
                )
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise RequestError(
            f"the edit request's blob is not a readable image ({err}); expected PNG bytes",
            path="blobs",
        ) from err
    return EditRequest(
        image=image,
        instruction=_text("instruction", header.get("instruction")),
        seed=_seed(header),
        steps=_optional(header, "steps", lambda n, v: check_int(n, v, 1, 1000)),
        guidance_scale=_optional(header, "guidance_scale", lambda n, v: check_number(n, v, 0, 50)),
        image_guidance_scale=_optional(
            header, "image_guidance_scale", lambda n, v: check_number(n, v, 0, 50)
        ),
    )


def _images_response(
    request_id: Any, images: Sequence[Image.Image], seeds: Sequence[int], start: float
) -> tuple[dict[str, Any], list[bytes]]:
    results = [
        {"ok": True, "blob": i, "format": "png", "width": im.width, "height": im.height, "seed": s}
        for i, (im, s) in enumerate(zip(images, seeds, strict=True))
    ]
    blobs = [encode_png(im) for im in images]
    header = {
        "protocol": protocol.PROTOCOL_VERSION,
        "ok": True,
        "id": request_id,
        "results": results,
        "render_ms": round((time.perf_counter() - start) * 1000, 3),
    }
    return header, blobs


def _serve_generate(backend: DiffusionBackend, frame: protocol.Frame) -> tuple[dict, list[bytes]]:
    start = time.perf_counter()
    req = parse_generate(frame.header)
    images = backend.generate(
        req.prompts,
        req.seed,
        width=req.width,
        height=req.height,
        steps=req.steps,
        guidance_scale=req.guidance_scale,
        seeds=req.seeds,
    )
    seeds = req.seeds or [req.seed + i for i in range(len(images))]
    return _images_response(frame.header.get("id"), images, seeds, start)


def _serve_edit(backend: DiffusionBackend, frame: protocol.Frame) -> tuple[dict, list[bytes]]:
    start = time.perf_counter()
    req = parse_edit(frame.header, frame.blobs)
    image = backend.edit(
        req.image,
        req.instruction,
        req.seed,
        steps=req.steps,
        guidance_scale=req.guidance_scale,
        image_guidance_scale=req.image_guidance_scale,
    )
    return _images_response(frame.header.get("id"), [image], [req.seed], start)


OPS: dict[str, Callable[[DiffusionBackend, protocol.Frame], tuple[dict, list[bytes]]]] = {
    "generate": _serve_generate,
    "edit": _serve_edit,
}
"""The ops this server adds to the render protocol, by name."""


class DiffusionServer(RenderServer):
    """A `RenderServer` for a `DiffusionBackend` that also answers `generate` and `edit`."""

    def __init__(self, backend: DiffusionBackend, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(backend, host, port, serialize=True)
        self.diffusion = backend

    def handle_request_frame(self, frame: protocol.Frame) -> tuple[dict[str, Any], list[bytes]]:
        """The response to one request frame. Never raises for bad input."""
        header = frame.header
        request_id = header.get("id")
        op = header.get("op")
        known = (*BASE_OPS, *OPS)
        if op not in known:
            message = f"unknown op {op!r}; expected one of: {', '.join(known)}"
            return protocol.error_response(protocol.BAD_REQUEST, message, request_id=request_id), []
        if op != "ping" and op not in self.diffusion.ops:
            kind = "edit" if op == "edit" else "text2image"
            message = (
                f"this diffusion server does not serve {op!r} ({kind}.model is null in its "
                f"config); it serves: {', '.join(self.diffusion.ops)}. Fix: set {kind}.model "
                "and restart it, or send this request to another server."
            )
            return protocol.error_response(protocol.BAD_REQUEST, message, request_id=request_id), []
        if op in BASE_OPS:
            response, blobs = super().handle_request_frame(frame)
            if op == "ping" and response.get("ok"):
                response.update(self.describe())
            return response, blobs
        try:
            return OPS[op](self.diffusion, frame)
        except RequestError as err:
            response = protocol.error_response(
                err.error_type, str(err), request_id=request_id, path=err.path
            )
            return response, []
        except Exception as err:  # a pipeline failure must not take the server down
            log.exception("diffusion %s failed", op)
            message = f"{type(err).__name__}: {err}"
            return protocol.error_response(protocol.INTERNAL, message, request_id=request_id), []

    def describe(self) -> dict[str, Any]:
        """What `ping` adds: ops served, models, device and dtype."""
        return {
            "ops": ["ping", *self.diffusion.ops],
            "models": self.diffusion.models(),
            "device": self.diffusion.placement.device,
            "dtype": self.diffusion.placement.dtype,
        }
