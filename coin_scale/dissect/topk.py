"""Running per-unit top-k over batches: bounded memory, deterministic whatever the batch order."""

from __future__ import annotations

import torch


def merge_topk(
    values: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k largest `values` (unit, n) per row, ties broken by the smaller image index.

    `indices` (unit, n) are image indices (-1 marks an empty slot). Returns (unit, min(k, n)).
    The tie rule makes the result independent of the order in which batches arrive.
    """
    by_index = torch.argsort(indices, dim=1, stable=True)
    values = torch.gather(values, 1, by_index)
    indices = torch.gather(indices, 1, by_index)
    order = torch.argsort(values, dim=1, descending=True, stable=True)[:, :k]
    return torch.gather(values, 1, order), torch.gather(indices, 1, order)


class RunningTopK:
    """The k strongest images of every unit, merged batch by batch (never images x units)."""

    def __init__(self, n_units: int, k: int) -> None:
        if k < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        self.k = k
        self.values = torch.full((n_units, 0), float("-inf"))
        self.indices = torch.full((n_units, 0), -1, dtype=torch.int64)

    def update(self, activations: torch.Tensor, image_indices: torch.Tensor) -> None:
        """Merge a batch: activations (batch, unit), image_indices (batch,)."""
        batch_values = activations.T.to(torch.float32)
        batch_indices = image_indices.to(torch.int64).expand(activations.shape[1], -1)
        self.values, self.indices = merge_topk(
            torch.cat([self.values, batch_values], dim=1),
            torch.cat([self.indices, batch_indices], dim=1),
            self.k,
        )

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit, k') values descending and their image indices; k' = min(k, images seen)."""
        return self.values, self.indices
