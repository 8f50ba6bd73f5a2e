"""The configuration of one sparse autoencoder and its training run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

SAEKind = Literal["topk", "batchtopk"]
"""How codes are made sparse: `topk` keeps the k largest latents of every token, `batchtopk` the
k x batch largest of a whole batch (and a learned threshold at inference)."""
SAE_KINDS: tuple[SAEKind, ...] = ("topk", "batchtopk")


@dataclass(frozen=True, kw_only=True)
class SAEConfig:
    """One SAE on one layer of one model; every field is also a `train-sae` flag."""

    model: str
    """Model id the activations come from (as in `UnitId.model`); a checkpoint for another model
    is refused."""
    layer: str
    """Dotted module name of the layer; a checkpoint for another layer is refused."""
    d_in: int
    """Width of the layer: channels of a conv map, the token width of a ViT."""
    expansion: int = 8
    """Latents per input dimension: the dictionary has d_in x expansion latents (`d_sae`)."""
    k: int = 32
    """Active latents per token (topk), or on average per token of a batch (batchtopk)."""
    kind: SAEKind = "topk"
    aux_k: int | None = None
    """Dead latents the auxiliary loss may use to reconstruct the residual; None means d_in // 2."""
    aux_coef: float = 1.0 / 32.0
    """Weight of the auxiliary (dead-latent) loss relative to the reconstruction loss."""
    dead_after_tokens: int = 500_000
    """THE dead-latent definition, used by the auxiliary loss and the `dead_fraction` metric: a
    latent is dead when it has not fired (code != 0) on any of the last `dead_after_tokens`
    training tokens, counted in whole batches. Before that many tokens have been seen, no latent
    can be called dead and `dead_fraction` is None. 500k tokens: ~120 batches of 4096, so a dead
    latent fires on fewer than 1 token in 500k."""
    lr: float = 4e-4
    """Adam learning rate."""
    batch_tokens: int = 4096
    """Tokens per optimiser step (a conv layer's token is one spatial position of one image)."""
    steps: int = 10_000
    """Optimiser steps."""
    log_every: int = 100
    """Steps between two metric records (FVU, L0, dead fraction, loss)."""
    seed: int = 0
    """Seed of the initial weights (training is deterministic on CPU for a seed and a stream)."""
    probe_id: str | None = None
    """Probe set whose activations trained the SAE (provenance only; never checked)."""

    def __post_init__(self) -> None:
        for name in ("d_in", "expansion", "k", "batch_tokens", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kind not in SAE_KINDS:
            raise ValueError(f"kind must be one of {SAE_KINDS}, got {self.kind!r}")
        if self.k > self.d_sae:
            raise ValueError(
                f"--k {self.k} is larger than the dictionary of {self.d_sae} latents "
                f"(d_in {self.d_in} x expansion {self.expansion}); pass a smaller --k or a "
                f"larger --expansion"
            )
        if self.aux_k is not None and not 1 <= self.aux_k <= self.d_sae:
            raise ValueError(
                f"aux_k must be between 1 and the dictionary size {self.d_sae}, got {self.aux_k}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.aux_coef >= 0:
            raise ValueError(f"aux_coef must be >= 0, got {self.aux_coef}")
        if self.dead_after_tokens < self.batch_tokens:
            raise ValueError(
                f"dead_after_tokens ({self.dead_after_tokens}) must be at least batch_tokens "
                f"({self.batch_tokens}): latents are counted dead in whole batches"
            )
        if not self.model or not self.layer:
            raise ValueError("model and layer must name where the activations come from")

    @property
    def d_sae(self) -> int:
        """Number of latents in the dictionary."""
        return self.d_in * self.expansion

    @property
    def effective_aux_k(self) -> int:
        """`aux_k`, or d_in // 2 (at least 1) when it is None."""
        return self.aux_k if self.aux_k is not None else max(1, self.d_in // 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """The config of `to_dict`; unknown keys are refused (a file from another version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SAE config fields {unknown}; known: {sorted(known)}")
        return cls(**data)
