"""Ground-truth attributes of a scene: what the image shows, in the vocabulary of `vocab.ATTRIBUTES`.

Pure functions of the spec, so every backend reports the same attributes for the same spec.
Continuous values are binned after the camera: an object's size and position are the ones seen in
the image.
"""

from __future__ import annotations

from typing import Any

from unity_pool import vocab
from unity_pool.scene import Scene


def apparent_size(scene: Scene) -> float:
    """The main object's diameter in the image, as a fraction of the shorter side."""
    return scene.main.size * scene.camera.zoom


def apparent_position(scene: Scene) -> tuple[float, float]:
    """The main object's centre in the image, (x, y) in [0, 1], y downwards."""
    return scene.camera.apply(scene.main.x, scene.main.y)


def scene_attributes(scene: Scene) -> dict[str, Any]:
    """The resolved ground-truth attributes, keys in `vocab.ATTRIBUTES` order.

    `shape`, `color`, `texture`, `size` and `position` describe the main object; `background`,
    `n_objects` and `light` the scene.
    """
    main = scene.main
    return {
        "shape": main.shape,
        "color": main.color,
        "texture": main.texture,
        "background": scene.background,
        "size": vocab.bin_label(apparent_size(scene), vocab.SIZE_BINS),
        "position": vocab.position_label(*apparent_position(scene)),
        "n_objects": len(scene.objects),
        "light": vocab.bin_label(scene.lighting.intensity, vocab.LIGHT_BINS),
    }
