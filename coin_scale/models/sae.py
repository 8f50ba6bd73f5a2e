"""TopK and BatchTopK sparse autoencoders over tokens (token, d_in), and conv maps as tokens.

Every public method takes and returns raw activations, and codes in raw units (a latent's code is
the length of its unit-norm decoder direction in the layer's activation space). Inside, inputs are
multiplied by `input_scale` so that training sees E||x||^2 = d_in; `folded()` moves that scale
into the biases, which is how a checkpoint is saved.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from coin_scale.models.sae_config import SAE_KINDS, SAEKind

THRESHOLD_RATE = 0.01
"""Weight of each training batch in BatchTopK's inference threshold (an exponential moving mean:
the thresholds of early training would be stale)."""


def tokens_from_conv(acts: torch.Tensor) -> torch.Tensor:
    """(batch, channel, height, width) -> (batch * height * width, channel)."""
    if acts.dim() != 4:
        raise ValueError(
            f"expected a conv map (batch, channel, height, width), got {tuple(acts.shape)}"
        )
    return acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])


def conv_from_tokens(tokens: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(batch * height * width, channel) -> (batch, channel, height, width); inverse of
    `tokens_from_conv`."""
    return tokens.reshape(batch, height, width, tokens.shape[-1]).permute(0, 3, 1, 2)


def input_scale_for(mean_squared_norm: float, d_in: int) -> float:
    """The scalar s with E||s x||^2 = d_in, given E||x||^2 over the training data."""
    if not mean_squared_norm > 0 or not math.isfinite(mean_squared_norm):
        raise ValueError(f"cannot normalise activations with mean squared norm {mean_squared_norm}")
    return math.sqrt(d_in / mean_squared_norm)


class SparseAutoencoder(nn.Module):
    """x -> codes (d_sae, at most k active per token) -> reconstruction of x.

    Weights: `w_enc` (d_sae, d_in), `b_enc` (d_sae,), `w_dec` (d_sae, d_in) whose row i is latent
    i's unit-norm direction (a column of the decoder matrix), `b_dec` (d_in,) subtracted before
    encoding. Buffers: `input_scale` (scalar) and `threshold` (scalar, batchtopk inference, in
    normalised units).
    """

    input_scale: torch.Tensor
    threshold: torch.Tensor

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        kind: SAEKind = "topk",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if kind not in SAE_KINDS:
            raise ValueError(f"kind must be one of {SAE_KINDS}, got {kind!r}")
        if not 1 <= k <= d_sae:
            raise ValueError(f"k must be between 1 and d_sae={d_sae}, got {k}")
        self.d_in, self.d_sae, self.k, self.kind = d_in, d_sae, k, kind
        directions = torch.randn(d_sae, d_in, generator=generator)
        directions /= directions.norm(dim=1, keepdim=True)
        self.w_enc = nn.Parameter(directions.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.w_dec = nn.Parameter(directions.clone())
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("threshold", torch.tensor(0.0))
        self._threshold_updates = 0

    # -- normalised space (training) -------------------------------------------------------

    def encode_normalised(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, pre-activations), both (token, d_sae), of normalised inputs `xn`."""
        pre = (xn - self.b_dec) @ self.w_enc.T + self.b_enc
        return self._sparsify(pre), pre

    def decode_normalised(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised reconstruction (token, d_in) of normalised codes."""
        return codes @ self.w_dec + self.b_dec

    def _sparsify(self, pre: torch.Tensor) -> torch.Tensor:
        acts = torch.relu(pre)
        if self.kind == "topk":
            values, indices = acts.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(acts).scatter(-1, indices, values)
        if not self.training:
            return acts * (acts > self.threshold)
        flat = acts.flatten()
        values, indices = flat.topk(min(self.k * acts.shape[0], flat.numel()), sorted=False)
        self._update_threshold(values)
        return torch.zeros_like(flat).scatter(0, indices, values).view_as(acts)

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor) -> None:
        smallest = torch.where(kept > 0, kept, math.inf).min().float()
        rate = 1.0 if self._threshold_updates == 0 else THRESHOLD_RATE
        moved = self.threshold * (1 - rate) + rate * smallest
        self.threshold.copy_(torch.where(torch.isfinite(smallest), moved, self.threshold))
        self._threshold_updates += 1

    # -- raw space (everything else) -------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, pre-activations) of raw activations x (token, d_in), in raw units."""
        codes, pre = self.encode_normalised(x * self.input_scale)
        return codes / self.input_scale, pre / self.input_scale

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Raw reconstruction (token, d_in) of raw-unit codes (token, d_sae)."""
        return codes @ self.w_dec + self.b_dec / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw reconstruction of raw activations x (token, d_in)."""
        return self.decode(self.encode(x)[0])

    # -- training helpers ------------------------------------------------------------------

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of each decoder row's gradient along the row: a step then only turns the
        direction, and the renormalisation after it changes little."""
        grad = self.w_dec.grad
        if grad is not None:
            grad -= (grad * self.w_dec).sum(dim=1, keepdim=True) * self.w_dec

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Give every decoder row unit norm (after each optimiser step)."""
        self.w_dec.div_(self.w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def folded(self) -> SparseAutoencoder:
        """An equal SAE with `input_scale` 1: the scale moved into the biases and threshold.

        With s = input_scale, raw codes are pre/s = w_enc (x - b_dec/s) + b_enc/s and TopK
        selection is unchanged by a positive factor, so w_enc and w_dec stay as they are.
        """
        scale = float(self.input_scale)
        out = SparseAutoencoder(self.d_in, self.d_sae, self.k, self.kind)
        with torch.no_grad():
            out.w_enc.copy_(self.w_enc)
            out.w_dec.copy_(self.w_dec)
            out.b_enc.copy_(self.b_enc / scale)
            out.b_dec.copy_(self.b_dec / scale)
            out.threshold.copy_(self.threshold / scale)
        out._threshold_updates = self._threshold_updates
        return out.to(self.w_enc.device).train(self.training)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}, k={self.k}, kind={self.kind}"
