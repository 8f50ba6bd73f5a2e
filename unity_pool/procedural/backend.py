"""The procedural renderer as a `server.Backend`: spec in, PNG and attributes out."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from unity_pool.procedural.draw import render
from unity_pool.scene import Scene
from unity_pool.server import Rendered

PNG_COMPRESS_LEVEL = 1
"""zlib level for PNGs: 1 is ~3x faster than the default 6 and barely larger on these images.
PNG is lossless, so the level never changes pixels."""


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image (deterministic for equal pixels)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


class ProceduralBackend:
    """Validates a spec (`Scene.from_dict`), draws it and encodes a PNG."""

    name = "procedural"

    def render(self, spec: Mapping[str, Any]) -> Rendered:
        """Render one spec; raises `SceneError` naming the field if it is invalid."""
        scene = Scene.from_dict(spec)
        image, attributes = render(scene)
        return Rendered(
            image=encode_png(image),
            format="png",
            width=scene.width,
            height=scene.height,
            attributes=attributes,
        )
