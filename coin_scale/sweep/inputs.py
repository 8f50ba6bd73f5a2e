"""The sweep's embedded defaults: a rendered target image, a rendered probe set, the probe CNN."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from coin_scale.cache import cache_root
from coin_scale.errors import UserError

log = logging.getLogger(__name__)

MAX_PIXELS = 200_000_000
"""Images up to this many pixels are resized like any other; beyond it PIL's bomb guard refuses."""


def load_image(path: str) -> Image.Image:
    """An RGB image; a missing, corrupt or non-image file is a one-line UserError."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"image {file} does not exist")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(file) as image:
            if image.width * image.height > 4096 * 4096:
                log.info("image %s is %dx%d: decoding it reduced", file, image.width, image.height)
                image.draft("RGB", (2048, 2048))
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {file}: {str(err).splitlines()[0]}") from None


def rendered_target(warehouse: str, seed: int, size: int) -> str:
    """Render the default target image (one object, known attributes) into the warehouse."""
    import dataclasses

    from unity_pool.procedural import render
    from unity_pool.sampling import sample_scenes

    scene = next(s for s in sample_scenes(64, 10_000 + seed, width=size, height=size) if len(s.objects) == 1)
    # A large, centred main object: readable at the probe CNN's 64 px, like its training scenes.
    main = dataclasses.replace(scene.main, size=0.45, x=0.5, y=0.5)
    scene = dataclasses.replace(scene, objects=(main,))
    from coin_scale.storage.fs import local_dir

    path = local_dir(warehouse, "targets") / f"rendered-seed{seed}-{size}.png"  # PIL needs a file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        image, attributes = render(scene)
        image.save(path)
        log.info("target image: a rendered %s (%s)", attributes.get("shape"), path)
    return str(path)


def probe_cnn_checkpoint() -> str:
    """The path of the probe CNN's checkpoint, trained on first use (a few minutes) and cached."""
    from coin_scale.training.probe_cnn import ensure_probe_cnn

    return str(ensure_probe_cnn(cache_root()))
