"""Images embedded in reports: a file shrunk to a JPEG data URI (shared by the HTML and SVG parts),
or an image drawn for the report (`coin_scale.report.spatial`) encoded the same way."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

from PIL import Image

logger = logging.getLogger(__name__)

JPEG_QUALITY = 85


def load_rgb(path: str | Path) -> Image.Image | None:
    """The image at `path` in RGB, or None (and a warning) when it is missing or unreadable."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        logger.warning("report: cannot read image %s (%s); drawing a placeholder", path, exc)
        return None


def image_data_uri(image: Image.Image) -> str:
    """A `data:image/jpeg;base64,...` URI of `image` as it is."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_data_uri(path: str | Path, size: int) -> str | None:
    """A `data:image/jpeg;base64,...` URI of the image shrunk to `size` px on its longest side.

    Returns None (and logs a warning) when the file is missing or not a readable image.
    """
    rgb = load_rgb(path)
    if rgb is None:
        return None
    rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image_data_uri(rgb)
