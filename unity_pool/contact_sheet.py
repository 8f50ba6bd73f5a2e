"""A contact sheet of rendered scenes: a grid of tiles, each captioned with shape, colour, texture.

`python -m unity_pool.contact_sheet --out docs/contact-sheet.png` makes the sheet in the docs
(64 scenes of `sample_scenes(64, seed=0)`, 8 x 8).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from unity_pool.procedural.draw import render
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Scene

log = logging.getLogger(__name__)

CAPTION_HEIGHT = 14
"""Pixels of the caption strip under each tile."""


def caption(attributes: dict[str, object]) -> str:
    """The tile caption: `shape colour texture` of the main object."""
    return f"{attributes['shape']} {attributes['color']} {attributes['texture']}"


def contact_sheet(
    scenes: Sequence[Scene], *, columns: int = 8, tile: int = 160, gap: int = 2
) -> Image.Image:
    """The scenes rendered and resized to `tile` pixels square, in rows of `columns`, each with a
    caption strip below; white background."""
    if not scenes or columns < 1 or tile < 8:
        raise ValueError(
            f"expected at least one scene, columns >= 1 and tile >= 8; got {len(scenes)} scenes, "
            f"columns={columns}, tile={tile}."
        )
    rows = -(-len(scenes) // columns)
    cell_w, cell_h = tile + gap, tile + CAPTION_HEIGHT + gap
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=11)
    except (TypeError, ImportError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        font = ImageFont.load_default()
    for i, scene in enumerate(scenes):
        image, attributes = render(scene)
        if image.size != (tile, tile):
            image = image.resize((tile, tile), Image.Resampling.LANCZOS)
        x, y = gap + (i % columns) * cell_w, gap + (i // columns) * cell_h
        sheet.paste(image, (x, y))
        draw.text((x + 2, y + tile + 1), caption(attributes), fill=(30, 30, 30), font=font)
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unity_pool.contact_sheet", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/contact-sheet.png"))
    parser.add_argument("--n", type=int, default=64, help="scenes (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--tile", type=int, default=160, help="tile side in pixels (default 160)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    scenes = sample_scenes(args.n, args.seed, width=args.tile, height=args.tile)
    sheet = contact_sheet(scenes, columns=args.columns, tile=args.tile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, format="PNG", optimize=True)
    log.info("wrote %s (%dx%d, %d bytes)", args.out, *sheet.size, args.out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
