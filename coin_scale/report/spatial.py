"""Images of where a unit fires, for the report's unit cards: `coin_scale.models.map_images`
(shared with the agents' masked exemplars), under the names the report uses."""

from coin_scale.models.map_images import (
    DIM,
    HEAT_ALPHA,
    HEAT_STOPS,
    OUTLINE,
    OUTLINE_WIDTH,
    heat_colours,
    heat_overlay,
    heat_scale_css,
    masked_exemplar,
    model_view,
    upsample_map,
)

__all__ = [
    "DIM", "HEAT_ALPHA", "HEAT_STOPS", "OUTLINE", "OUTLINE_WIDTH", "heat_colours", "heat_overlay",
    "heat_scale_css", "masked_exemplar", "model_view", "upsample_map",
]  # fmt: skip
