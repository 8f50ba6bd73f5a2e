"""Streaming SAE metrics in float64: fraction of variance unexplained, L0, dead latents, and what
a model keeps when a layer is replaced by its reconstruction. Pure functions and accumulators."""

from __future__ import annotations

import math

import torch


class ReconstructionMetrics:
    """FVU and mean L0 over any number of batches of tokens.

    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, with mean(x) the mean over every token seen:
    per-dimension mean and M2 merged with Chan's update in float64, so the result does not depend
    on batching. Sums stay on the batches' device until read (no synchronisation per batch).
    """

    def __init__(self, d_in: int) -> None:
        self.d_in = d_in
        self.tokens = 0
        self._mean: torch.Tensor | None = None
        self._m2 = torch.zeros(d_in, dtype=torch.float64)
        self._squared_error = torch.zeros((), dtype=torch.float64)
        self._active = torch.zeros((), dtype=torch.int64)

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        """Add a batch: inputs and reconstructions (token, d_in), codes (token, d_sae)."""
        n = x.shape[0]
        if n == 0:
            return
        x64 = x.detach().to(torch.float64)
        batch_mean = x64.mean(dim=0)
        batch_m2 = (x64 - batch_mean).pow(2).sum(dim=0)
        if self._mean is None:
            self._mean = batch_mean
            self._m2 = batch_m2
            self._squared_error = self._squared_error.to(x.device)
            self._active = self._active.to(x.device)
        else:
            total = self.tokens + n
            delta = batch_mean - self._mean
            self._mean = self._mean + delta * (n / total)
            self._m2 = self._m2 + batch_m2 + delta.pow(2) * (self.tokens * n / total)
        self._squared_error += (x64 - x_hat.detach().to(torch.float64)).pow(2).sum()
        self._active += (codes.detach() != 0).sum()
        self.tokens += n

    def fvu(self) -> float:
        """Fraction of variance unexplained; NaN before any token or for constant inputs."""
        total = float(self._m2.sum())
        return float(self._squared_error) / total if total > 0 else math.nan

    def l0(self) -> float:
        """Mean number of active latents per token; NaN before any token."""
        return int(self._active) / self.tokens if self.tokens else math.nan


class DeadLatents:
    """Tokens since each latent last fired, for the fixed definition in `SAEConfig.dead_after_tokens`.

    Counted in whole batches: a latent that fires anywhere in a batch is reset to 0, every other
    latent ages by the batch's token count.
    """

    def __init__(self, d_sae: int, dead_after_tokens: int, device: torch.device | None = None):
        self.dead_after_tokens = dead_after_tokens
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.tokens_seen = 0

    def update(self, codes: torch.Tensor) -> None:
        """Add a batch of codes (token, d_sae)."""
        fired = (codes != 0).any(dim=0)
        aged = self.tokens_since_fired + codes.shape[0]
        self.tokens_since_fired = torch.where(fired, 0, aged)
        self.tokens_seen += codes.shape[0]

    def mask(self) -> torch.Tensor:
        """Boolean (d_sae,): which latents are dead now (none before a full window was seen)."""
        return self.tokens_since_fired >= self.dead_after_tokens

    def fraction(self) -> float | None:
        """Fraction of dead latents, or None before `dead_after_tokens` tokens were seen."""
        if self.tokens_seen < self.dead_after_tokens:
            return None
        return float(self.mask().double().mean())


def replacement_agreement(
    logits_orig: torch.Tensor, logits_replaced: torch.Tensor
) -> tuple[float, float]:
    """(top-1 agreement, mean KL(orig || replaced)) of two (batch, class) logit matrices."""
    if logits_orig.shape != logits_replaced.shape or logits_orig.dim() != 2:
        raise ValueError(
            f"expected two (batch, class) logit matrices of one shape, got "
            f"{tuple(logits_orig.shape)} and {tuple(logits_replaced.shape)}"
        )
    log_p = torch.log_softmax(logits_orig.detach().to(torch.float64), dim=-1)
    log_q = torch.log_softmax(logits_replaced.detach().to(torch.float64), dim=-1)
    agree = (log_p.argmax(dim=-1) == log_q.argmax(dim=-1)).double().mean()
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(dim=-1).mean()
    return float(agree), float(kl)
