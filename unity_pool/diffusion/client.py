"""A client for the diffusion server: `generate` and `edit` over the render protocol.

`DiffusionClient` is a `RenderClient` (so `ping`, `render`, reconnects and errors are the same)
with the same `generate(prompts, seed)` and `edit(image, instruction, seed)` as the in-process
`DiffusionBackend`, so either can serve as a text-to-image tool.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

from unity_pool import protocol
from unity_pool.client import RenderClient, RenderFailed
from unity_pool.procedural.backend import encode_png


class DiffusionClient(RenderClient):
    """Talks to `python -m unity_pool.diffusion` at (host, port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """`timeout`: seconds to wait for an answer (diffusion on a CPU is slow)."""
        super().__init__(host, port, timeout=timeout, connect_timeout=connect_timeout)

    def __enter__(self) -> DiffusionClient:
        return self

    def generate(
        self,
        prompts: Sequence[str],
        seed: int,
        *,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Image.Image]:
        """One RGB image per prompt; prompt `i` is sampled with seed `seed + i`, or `seeds[i]`
        when given. Raises `ValueError` when the server rejects a field and `RenderFailed` when
        it fails or answers with an image that cannot be read."""
        header: dict[str, Any] = {"op": "generate", "prompts": list(prompts)}
        if seeds is None:
            header["seed"] = seed
        else:
            header["seeds"] = [int(s) for s in seeds]
        options: dict[str, Any] = {"width": width, "height": height, "steps": steps}
        options["guidance_scale"] = guidance_scale
        header.update({k: v for k, v in options.items() if v is not None})
        return self._images(header, [], expected=len(prompts))

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        seed: int,
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
    ) -> Image.Image:
        """`image` edited as `instruction` says, same size, RGB."""
        header: dict[str, Any] = {"op": "edit", "instruction": instruction, "seed": seed}
        options: dict[str, Any] = {"steps": steps, "guidance_scale": guidance_scale}
        options["image_guidance_scale"] = image_guidance_scale
        header.update({k: v for k, v in options.items() if v is not None})
        return self._images(header, [encode_png(image.convert("RGB"))], expected=1)[0]

    def _images(
        self, header: Mapping[str, Any], blobs: Sequence[bytes], *, expected: int
    ) -> list[Image.Image]:
        frame = self.request(header, blobs)
        response = frame.header
        if not response.get("ok"):
            error = response.get("error") or {}
            where = f" (field {error['path']})" if error.get("path") else ""
            message = (
                f"diffusion server at {self.address} refused the {header['op']} request"
                f"{where}: {error.get('message', response)}"
            )
            if error.get("type") in (protocol.BAD_REQUEST, protocol.TOO_LARGE):
                raise ValueError(message)
            raise RenderFailed(message)
        results = response.get("results")
        if not isinstance(results, list) or len(results) != expected:
            raise RenderFailed(
                f"diffusion server at {self.address} answered {results!r:.200} for {expected} "
                "images"
            )
        images = []
        for i, result in enumerate(results):
            try:
                with Image.open(io.BytesIO(frame.blobs[result["blob"]])) as im:
                    images.append(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, IndexError, KeyError, TypeError) as err:
                raise RenderFailed(
                    f"diffusion server at {self.address} answered the {header['op']} request "
                    f"with an unreadable image (result {i}: {type(err).__name__}: {err})"
                ) from err
        return images
