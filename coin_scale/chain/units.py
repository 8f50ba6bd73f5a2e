"""How a layer's output is read and edited as units: its channels, or the features of an SAE
trained on it. The chain's faithfulness tests take either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from coin_scale.models.activations import Reduction, reduce_units, sae_code_maps
from coin_scale.models.layers import SPATIAL_DIMS, Layout
from coin_scale.models.sae import SparseAutoencoder, conv_from_tokens, tokens_from_conv


def pool_units(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(batch, unit) mean over space of a layer output, in its own dtype and autograd graph."""
    dims = SPATIAL_DIMS[layout]
    return output.mean(dim=dims) if dims else output


class UnitView(Protocol):
    """A layer's output seen as units."""

    def pooled(self, out: torch.Tensor) -> torch.Tensor:
        """(batch, unit): each unit's mean over positions."""
        ...

    def ablate(self, out: torch.Tensor, index: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """`out` with the units `index[b]` (batch, k) of element b set to 0 (`values` None) or
        to `values[unit]` at every position; a new tensor."""
        ...

    def reduced(self, out: torch.Tensor, reduction: Reduction) -> torch.Tensor:
        """(batch, unit): each unit's max or mean over positions, as the dissection reduces it."""
        ...

    def scale(self, out: torch.Tensor, unit: int, factor: float) -> torch.Tensor:
        """`out` with one unit multiplied by `factor` at every position (0 ablates it, 2
        amplifies it); a new tensor."""
        ...


@dataclass(frozen=True, slots=True)
class Channels:
    """The layer's own channels."""

    layout: Layout

    def pooled(self, out: torch.Tensor) -> torch.Tensor:
        return pool_units(out, self.layout)

    def reduced(self, out: torch.Tensor, reduction: Reduction) -> torch.Tensor:
        return reduce_units(out, self.layout, reduction)

    def scale(self, out: torch.Tensor, unit: int, factor: float) -> torch.Tensor:
        out = out.clone()
        out.movedim(-1 if self.layout in ("nhwc", "ntc") else 1, 1)[:, unit] *= factor
        return out

    def ablate(self, out: torch.Tensor, index: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        out = out.clone()
        moved = out.movedim(-1 if self.layout in ("nhwc", "ntc") else 1, 1)  # a view of the clone
        for b in range(moved.shape[0]):
            chosen = index[b].to(out.device)
            if values is None:
                moved[b, chosen] = 0.0
            else:
                fill = values.to(device=out.device, dtype=out.dtype)[chosen]
                moved[b, chosen] = fill.view(-1, *([1] * (moved.dim() - 2)))
        return out


@dataclass(frozen=True, slots=True)
class SAEFeatures:
    """Features of an SAE of a conv layer: ablating feature f removes code_f x its decoder
    direction at every position (or sets its code to `values[f]`); the reconstruction error and
    the other features stay as they are."""

    sae: SparseAutoencoder

    def pooled(self, out: torch.Tensor) -> torch.Tensor:
        return pool_units(sae_code_maps(self.sae)(out), "nchw")

    def reduced(self, out: torch.Tensor, reduction: Reduction) -> torch.Tensor:
        return reduce_units(sae_code_maps(self.sae)(out), "nchw", reduction)

    def scale(self, out: torch.Tensor, unit: int, factor: float) -> torch.Tensor:
        code = sae_code_maps(self.sae)(out)[:, unit]  # (batch, height, width)
        direction = self.sae.w_dec[unit].to(device=out.device, dtype=code.dtype)
        change = (factor - 1.0) * code.unsqueeze(1) * direction.view(1, -1, 1, 1)
        return out + change.to(out.dtype)

    def ablate(self, out: torch.Tensor, index: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        batch, _, height, width = out.shape
        codes = tokens_from_conv(sae_code_maps(self.sae)(out)).view(batch, height * width, -1)
        directions = self.sae.w_dec.to(codes.dtype)
        removed = torch.zeros(batch, height * width, out.shape[1], dtype=codes.dtype, device=out.device)
        for b in range(batch):
            chosen = index[b].to(out.device)
            change = codes[b][:, chosen]
            if values is not None:
                change = change - values.to(device=out.device, dtype=codes.dtype)[chosen]
            removed[b] = change @ directions[chosen]
        delta = conv_from_tokens(removed.reshape(-1, out.shape[1]), batch, height, width)
        return out - delta.to(out.dtype)


def as_view(units: Layout | UnitView) -> UnitView:
    """A layout string means the layer's channels."""
    return Channels(units) if isinstance(units, str) else units
