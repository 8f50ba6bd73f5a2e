"""Turn a finished dissection into the rows of the warehouse tables (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import torch

from coin_scale.dissect.statistics import UnitStatistics
from coin_scale.probe.folder import ProbeSet


def probe_images_table(probe: ProbeSet, failures: dict[int, str]) -> pa.Table:
    """One row per file of the probe set, with `ok` or `unreadable` and the reason."""
    images = probe.images
    return pa.table({
        "probe_id": [probe.probe_id] * len(images),
        "image_index": [im.index for im in images],
        "image_path": [im.path for im in images],
        "label": [im.label for im in images],
        "status": ["unreadable" if im.index in failures else "ok" for im in images],
        "error": [failures.get(im.index) for im in images],
        "bytes": [im.bytes for im in images],
    })  # fmt: skip


def unit_stats_table(
    dissection_id: str, model: str, layer: str, reduction: str, stats: UnitStatistics
) -> pa.Table:
    n = stats.mean.shape[0]
    return pa.table({
        "dissection_id": [dissection_id] * n,
        "model": [model] * n,
        "layer": [layer] * n,
        "unit": pa.array(range(n), pa.int32()),
        "kind": ["neuron"] * n,
        "reduction": [reduction] * n,
        "count": [stats.count] * n,
        "mean": stats.mean.numpy(),
        "std": stats.std.numpy(),
        "min": stats.min.numpy(),
        "max": stats.max.numpy(),
        "threshold": stats.threshold.numpy(),
        "quantile": [stats.quantile] * n,
    })  # fmt: skip


def exemplars_table(
    dissection_id: str,
    model: str,
    layer: str,
    values: torch.Tensor,
    indices: torch.Tensor,
    probe: ProbeSet,
) -> pa.Table:
    """values/indices: (unit, k) from RunningTopK; empty slots (index -1) are dropped."""
    units, ranks = torch.meshgrid(
        torch.arange(values.shape[0]), torch.arange(values.shape[1]), indexing="ij"
    )
    keep = indices.flatten() >= 0
    image_index = indices.flatten()[keep].tolist()
    paths: Sequence[str] = [probe.images[i].path for i in image_index]
    labels = [probe.images[i].label for i in image_index]
    n = len(image_index)
    return pa.table({
        "dissection_id": [dissection_id] * n,
        "model": [model] * n,
        "layer": [layer] * n,
        "unit": pa.array(units.flatten()[keep].numpy(), pa.int32()),
        "kind": ["neuron"] * n,
        "rank": pa.array(ranks.flatten()[keep].numpy(), pa.int32()),
        "image_index": pa.array(image_index, pa.int64()),
        "image_path": paths,
        "label": labels,
        "activation": pa.array(values.flatten()[keep].numpy(), pa.float32()),
    })  # fmt: skip
