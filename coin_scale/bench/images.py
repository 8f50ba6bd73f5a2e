"""Deterministic synthetic photographs for benchmarks and tests (smooth colour fields + shapes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def write_synthetic_images(
    folder: str | Path, n: int, *, size: tuple[int, int] = (320, 240), seed: int = 0,
    fmt: str = "JPEG", classes: int = 4,
) -> list[Path]:  # fmt: skip
    """Write n images in `classes` sub-folders (labels); the same seed gives the same files."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    paths = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        label = f"class{i % classes}"
        (folder / label).mkdir(parents=True, exist_ok=True)
        fx, fy, phase = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.28)]
        base = rng.uniform(0, 255, 3)
        wave = np.sin(xx * fx + yy * fy + phase)[..., None]
        pixels = np.clip(base + 80 * wave + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            x1, y1 = x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        suffix = ".jpg" if fmt == "JPEG" else f".{fmt.lower()}"
        path = folder / label / f"img{i:05d}{suffix}"
        image.save(path, fmt, quality=90) if fmt == "JPEG" else image.save(path, fmt)
        paths.append(path)
    return paths
