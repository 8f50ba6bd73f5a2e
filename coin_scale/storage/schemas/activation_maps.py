"""`activation_maps`: the spatial activation maps of a sweep's explained units, on their top
exemplars and on the target image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow

IMAGE_ROLES = ("exemplar", "target")
"""What the image is to the unit: one of its top probe images, or the sweep's target image."""


@dataclass(frozen=True, kw_only=True)
class Row:
    """One explained unit's map on one image, at its layer's resolution."""

    run_id: str
    """The sweep (see `runs`); write key."""
    dissection_id: str
    """The dissection of the layer (see `dissections`): its exemplars and the unit's threshold."""
    model: str
    """Model name."""
    layer: str
    """Layer name (a string even when it looks like a number)."""
    kind: str
    """'neuron', 'sae' or 'synthetic', as in the dissection's `exemplars`."""
    unit: int
    """Unit index within the layer (channel or SAE latent), from 0."""
    image_role: str
    """'exemplar' (one of the unit's top probe images) or 'target' (the sweep's image)."""
    rank: int | None
    """The exemplar's rank in `exemplars` (0: the strongest); null for the target."""
    image_index: int | None
    """The exemplar's index in the probe set (see `probe_images`); null for the target."""
    image_path: str
    """The image's path."""
    height: int
    """Rows of the map: the layer's spatial height (a ViT: its patch grid's side)."""
    width: int
    """Columns of the map."""
    activation_map: tuple[float, ...]
    """height x width raw activations, row by row (float32), of the model's centre crop of the
    image (its preprocessing: resize the short side, centre-crop); an SAE latent's codes."""
    threshold: float | None
    """Where the unit fires (MAIA-style, after NetDissect): the `threshold_quantile` of its
    activations over every position of its maps on `threshold_images` probe images drawn at
    random; the report keeps an exemplar's region above it and dims the rest. The same on every
    row of the unit; null when none of the drawn images could be read."""
    threshold_quantile: float | None
    """e.g. 0.99: the positions above `threshold` are the unit's top 1% over the drawn images."""
    threshold_images: int
    """Probe images (drawn at random, seeded by the sweep's seed) the threshold is over."""


SPEC = TableSpec(
    name="activation_maps",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("dissection_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("image_role", pa.string(), nullable=False),
            pa.field("rank", pa.int32()),
            pa.field("image_index", pa.int64()),
            pa.field("image_path", pa.string(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("activation_map", pa.list_(pa.float32()), nullable=False),
            pa.field("threshold", pa.float64()),
            pa.field("threshold_quantile", pa.float64()),
            pa.field("threshold_images", pa.int32(), nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "kind", "unit", "image_role", "image_path"),
    choices={"kind": UNIT_KINDS, "image_role": IMAGE_ROLES},
    row_type=Row,
    doc="One row per (explained unit, image) of a sweep (keyed by run_id): the unit's spatial "
    "activation map, at its layer's resolution, on each of its top exemplars shown in the report "
    "and on the target image, with the threshold the report's masked exemplars are cut at (the "
    "unit's top quantile over the positions of probe images drawn at random, as MAIA's). A layer "
    "with no spatial extent (one vector per image) has no rows.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
