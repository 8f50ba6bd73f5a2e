"""Per-unit statistics merged across batches: moments in float64 and an exact upper quantile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from coin_scale.dissect.topk import RunningTopK


@dataclass(frozen=True, slots=True)
class UnitStatistics:
    """Final statistics of every unit; each tensor has shape (unit,)."""

    count: int
    mean: torch.Tensor
    std: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor
    threshold: torch.Tensor
    """The activation at `quantile` (numpy's linear interpolation between order statistics)."""
    quantile: float
    threshold_method: str
    """`exact`, or `sampled` when the probe set was too large to keep every upper value."""


class RunningMoments:
    """Count, mean and M2 per unit, merged with Chan's parallel update in float64."""

    def __init__(self, n_units: int) -> None:
        self.count = 0
        self.mean = torch.zeros(n_units, dtype=torch.float64)
        self.m2 = torch.zeros(n_units, dtype=torch.float64)
        self.min = torch.full((n_units,), math.inf, dtype=torch.float64)
        self.max = torch.full((n_units,), -math.inf, dtype=torch.float64)

    def update(self, activations: torch.Tensor) -> None:
        """Merge a batch of activations (batch, unit)."""
        x = activations.to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(dim=0)
        batch_m2 = ((x - batch_mean) ** 2).sum(dim=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.min = torch.minimum(self.min, x.min(dim=0).values)
        self.max = torch.maximum(self.max, x.max(dim=0).values)

    def std(self) -> torch.Tensor:
        """Population standard deviation (ddof=0)."""
        if self.count == 0:
            return torch.full_like(self.mean, math.nan)
        return (self.m2 / self.count).clamp_min(0).sqrt()


class RunningUpperQuantile:
    """Exact q-quantile per unit from the largest values only, so memory is ~ (1-q) x images.

    Needs the total image count up front (a probe set is listed before it is run). When the upper
    tail would exceed `max_values` per unit, only a deterministic hash sample of the images is kept
    and the quantile is that sample's (`threshold_method == "sampled"`).
    """

    def __init__(self, n_units: int, quantile: float, n_images: int, max_values: int = 4096):
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.quantile = quantile
        needed = self._needed(n_images)
        self.sample_rate = 1.0 if needed <= max_values else max_values / (2.0 * needed)
        self.n_seen = 0
        capacity = needed if self.sample_rate == 1.0 else max_values
        self._top = RunningTopK(n_units, max(capacity, 1))

    def _needed(self, n: int) -> int:
        return n - math.floor(self.quantile * (n - 1)) if n > 0 else 1

    @property
    def method(self) -> str:
        return "exact" if self.sample_rate == 1.0 else "sampled"

    def update(self, activations: torch.Tensor, image_indices: torch.Tensor) -> None:
        if self.sample_rate < 1.0:
            keep = _hash_unit_interval(image_indices) < self.sample_rate
            activations, image_indices = activations[keep], image_indices[keep]
        self.n_seen += int(activations.shape[0])
        self._top.update(activations, image_indices)

    def result(self) -> torch.Tensor:
        """(unit,) float64 thresholds; NaN when no image was seen."""
        n = self.n_seen
        values = self._top.values.to(torch.float64)
        if n == 0:
            return torch.full((values.shape[0],), math.nan, dtype=torch.float64)
        position = self.quantile * (n - 1)  # ascending, 0-based
        lower, upper = math.floor(position), math.ceil(position)
        frac = position - lower
        # Descending rank r holds the ascending order statistic n-1-r.
        lo = values[:, min(n - 1 - lower, values.shape[1] - 1)]
        hi = values[:, min(n - 1 - upper, values.shape[1] - 1)]
        return lo + (hi - lo) * frac


def _hash_unit_interval(indices: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random number in [0, 1) per image index (splitmix-style integer hash)."""
    x = indices.to(torch.int64) * 0x9E3779B1 + 0x7F4A7C15
    x = (x ^ (x >> 16)) * 0x45D9F3B
    x = x ^ (x >> 16)
    return (x & 0xFFFFFF).to(torch.float64) / float(0x1000000)


class UnitAccumulator:
    """Everything a dissection keeps per unit: top-k exemplars, moments and the quantile."""

    def __init__(self, n_units: int, *, top_k: int, quantile: float, n_images: int) -> None:
        self.topk = RunningTopK(n_units, top_k)
        self.moments = RunningMoments(n_units)
        self.upper = RunningUpperQuantile(n_units, quantile, n_images)

    def update(self, activations: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Merge a batch: activations (batch, unit) and their image indices (batch,)."""
        self.topk.update(activations, image_indices)
        self.moments.update(activations)
        self.upper.update(activations, image_indices)

    def state(self) -> dict[str, np.ndarray]:
        """Every running quantity as numpy arrays (for a resume checkpoint); `restore` reads it."""
        m, up = self.moments, self.upper
        tensors = {
            "topk_values": self.topk.values, "topk_indices": self.topk.indices,
            "mean": m.mean, "m2": m.m2, "min": m.min, "max": m.max,
            "upper_values": up._top.values, "upper_indices": up._top.indices,
        }  # fmt: skip
        state = {name: t.numpy().copy() for name, t in tensors.items()}
        state["counts"] = np.array([m.count, up.n_seen], dtype=np.int64)
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state()` of an accumulator built with the same units, k and images."""
        m, up = self.moments, self.upper
        if state["mean"].shape != m.mean.shape or state["topk_values"].shape[1] > self.topk.k:
            raise ValueError("checkpoint: accumulator state of another shape (units or top-k)")
        if state["upper_values"].shape[1] > up._top.k:
            raise ValueError("checkpoint: quantile state of another probe size")
        t = {name: torch.from_numpy(np.array(a)) for name, a in state.items()}
        self.topk.values, self.topk.indices = t["topk_values"], t["topk_indices"]
        m.mean, m.m2, m.min, m.max = t["mean"], t["m2"], t["min"], t["max"]
        up._top.values, up._top.indices = t["upper_values"], t["upper_indices"]
        m.count, up.n_seen = (int(c) for c in state["counts"])

    def statistics(self) -> UnitStatistics:
        m = self.moments
        return UnitStatistics(
            count=m.count, mean=m.mean, std=m.std(), min=m.min, max=m.max,
            threshold=self.upper.result(), quantile=self.upper.quantile,
            threshold_method=self.upper.method,
        )  # fmt: skip
