"""The procedural backend: numpy + PIL drawing of shapes, textures, backgrounds and light."""

from unity_pool.procedural.backend import ProceduralBackend, encode_png
from unity_pool.procedural.draw import object_mask, render, render_array

__all__ = ["ProceduralBackend", "encode_png", "object_mask", "render", "render_array"]
