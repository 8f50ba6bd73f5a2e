"""Images embedded in reports: a file shrunk to a JPEG data URI (shared by the HTML and SVG parts)."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

JPEG_QUALITY = 85


def thumbnail_data_uri(path: str | Path, size: int) -> str | None:
    """A `data:image/jpeg;base64,...` URI of the image shrunk to `size` px on its longest side.

    Returns None (and logs a warning) when the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        logger.warning("report: cannot read image %s (%s); drawing a placeholder", path, exc)
        return None
    rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
