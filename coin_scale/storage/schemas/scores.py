"""`scores`: measured scores of a run's units and chains, one number per row (long format)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One measured number: which test, on what, under which settings."""

    run_id: str
    """The run (see `runs`); write key."""
    test: str
    """'ablation' (faithfulness of a chain layer's units), 'interpscore' (selectivity, causality,
    robustness, human alignment and their aggregate), 'predictive' (an explanation's AUC and
    Cohen's d on images rendered to satisfy it or not), 'mis' (machine psychophysics), 'heldout'
    (an explanation over a folder probe read as a predictor of the unit's activation on the probe
    images held out from its explainer: `coin_scale.eval.heldout`)."""
    metric: str
    """What was measured, e.g. 'margin_drop', 'logit_drop', 'probability_drop' (ablation); 'S',
    'C', 'R', 'H', 'interpscore' (interpscore); 'auc', 'cohens_d' (predictive); 'f1', 'iou',
    'auprc' (the unit as a detector of its concept, beside any test's scores); 'auc', 'pearson',
    'f1', 'auprc' (heldout: the explanation's predictor against the unit's activation above its
    threshold, or, for 'pearson', against the activation itself)."""
    value: float
    """The measurement (for random selections, the mean over `draws`)."""
    layer: str | None
    """Layer tested; null for a score of the whole run."""
    unit: int | None = None
    """Unit scored; null for a score of a set of units."""
    kind: str | None = None
    """'neuron', 'sae' or 'synthetic'; the kind of the units tested."""
    ablation: str | None = None
    """'zero' (maps set to 0) or 'mean' (set to the unit's mean over the probe set)."""
    selection: str | None = None
    """Which units were ablated: 'chain' (the chain's first k), 'random' (k random units),
    'activation' (the k most active units on the image)."""
    k: int | None = None
    """How many units were ablated."""
    draws: int | None = None
    """Random selections averaged (selection 'random')."""
    std: float | None = None
    """Standard deviation over the draws."""
    details: str | None = None
    """Anything else about the measurement, as JSON (e.g. the settings of a score; for heldout
    the predictor kind, the held-out images `n_images`, those above the unit's threshold
    `n_positive`, the threshold)."""


SPEC = TableSpec(
    name="scores",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("test", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("layer", pa.string()),
            pa.field("unit", pa.int32()),
            pa.field("kind", pa.string()),
            pa.field("ablation", pa.string()),
            pa.field("selection", pa.string()),
            pa.field("k", pa.int32()),
            pa.field("draws", pa.int32()),
            pa.field("std", pa.float64()),
            pa.field("details", pa.string()),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "test", "metric", "layer", "unit", "ablation", "selection", "k"),
    choices={
        "test": ("ablation", "interpscore", "predictive", "mis", "heldout"),
        "kind": UNIT_KINDS,
        "ablation": ("zero", "mean"),
        "selection": ("chain", "random", "activation"),
    },
    row_type=Row,
    doc="One row per measured number (keyed by run_id): faithfulness of a run's chain (ablating "
    "its units vs random and most-active units, over k) and per-unit scores (InterpScore, predictive "
    "AUC, MIS) with F1/IoU/AUPRC beside them; over a folder probe, each explanation's held-out "
    "AUC, Pearson r, F1 and AUPRC (test heldout).",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
