"""Training of one TopK or BatchTopK SAE on a stream of token batches (no Ray, no files)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from coin_scale.models.sae import SparseAutoencoder, input_scale_for
from coin_scale.models.sae_config import SAEConfig
from coin_scale.sae.metrics import DeadLatents, ReconstructionMetrics

log = logging.getLogger(__name__)

Metrics = dict[str, Any]
"""One record: step, tokens, loss, aux_loss, fvu, l0, dead_fraction (None before a full
dead-latent window), as plain floats and ints."""


@dataclass(frozen=True)
class TrainResult:
    """A trained SAE (taking raw activations, its `input_scale` not yet folded) and its metrics."""

    sae: SparseAutoencoder
    metrics_history: list[Metrics]
    """One record every `log_every` steps, and one after the last step."""
    final_metrics: Metrics
    """The last record, plus `input_scale` and `steps_done`."""


def train_sae(
    config: SAEConfig,
    batches: Iterable[torch.Tensor],
    *,
    mean: torch.Tensor | None = None,
    input_scale: float | None = None,
    progress: bool = True,
    on_metrics: Callable[[Metrics], None] | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train for `config.steps` steps on raw token batches (token, d_in), stopping early if the
    stream ends. `mean` (initial b_dec) and `input_scale` come from a pass over the whole cache
    (`ActivationCacheReader.statistics()`); when absent they are estimated on the first batch.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stream = iter(batches)
    first = next(stream, None)
    if first is None:
        raise ValueError("no training batches: the activation stream is empty")
    _check_batch(first, config.d_in)
    sae = _initial_sae(config, first, mean, input_scale).to(dev)
    scale = float(sae.input_scale)
    optimiser = torch.optim.Adam(sae.parameters(), lr=config.lr)
    dead = DeadLatents(config.d_sae, config.dead_after_tokens, device=dev)
    window = _Window(config.d_in)
    history: list[Metrics] = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    sae.train()
    bar = tqdm(total=config.steps, disable=not progress, desc="train-sae", unit="step")
    step, tokens = 0, 0

    def emit() -> None:
        history.append(window.record(step, tokens, dead))
        bar.set_postfix(fvu=f"{history[-1]['fvu']:.3f}", l0=f"{history[-1]['l0']:.1f}")
        if on_metrics is not None:
            on_metrics(history[-1])

    batch: torch.Tensor | None = first
    try:
        while step < config.steps and batch is not None:
            _check_batch(batch, config.d_in)
            xn = batch.to(dev, torch.float32, non_blocking=True) * scale
            with autocast:
                codes, pre = sae.encode_normalised(xn)
                recon = sae.decode_normalised(codes)
            loss, aux = _loss(sae, config, xn, recon.float(), pre.float(), dead)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_gradient()
            optimiser.step()
            sae.normalise_decoder()
            step += 1
            tokens += xn.shape[0]
            dead.update(codes.detach())
            window.update(xn, recon, codes, loss.detach(), aux)
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                emit()
            batch = next(stream, None)
        if step < config.steps:
            log.warning("the activation stream ended after %d of %d steps", step, config.steps)
            if window.steps:
                emit()
    finally:
        bar.close()
    final = {**history[-1], "input_scale": scale, "steps_done": step}
    return TrainResult(sae.eval(), history, final)


def _check_batch(batch: torch.Tensor, d_in: int) -> None:
    if batch.dim() != 2 or batch.shape[1] != d_in:
        raise ValueError(f"expected token batches (token, {d_in}), got {tuple(batch.shape)}")


def _initial_sae(
    config: SAEConfig, first: torch.Tensor, mean: torch.Tensor | None, input_scale: float | None
) -> SparseAutoencoder:
    """Random unit-norm directions (seeded), b_dec at the data mean, the input scale set."""
    generator = torch.Generator().manual_seed(config.seed)
    sae = SparseAutoencoder(config.d_in, config.d_sae, config.k, config.kind, generator=generator)
    x = first.detach().to("cpu", torch.float64)
    if mean is not None and tuple(mean.shape) != (config.d_in,):
        raise ValueError(f"mean must have shape ({config.d_in},), got {tuple(mean.shape)}")
    if input_scale is None:
        input_scale = input_scale_for(float(x.pow(2).sum(dim=1).mean()), config.d_in)
    data_mean = x.mean(dim=0) if mean is None else mean.detach().to("cpu", torch.float64)
    with torch.no_grad():
        sae.input_scale.fill_(input_scale)
        sae.b_dec.copy_((data_mean * input_scale).float())
    return sae


def _loss(
    sae: SparseAutoencoder,
    config: SAEConfig,
    xn: torch.Tensor,
    recon: torch.Tensor,
    pre: torch.Tensor,
    dead: DeadLatents,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised MSE + aux_coef x aux-k loss, aux-k loss); both stay on the device, unsynced."""
    variance = (xn - xn.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
    error = xn - recon
    loss = error.pow(2).sum() / variance
    if config.aux_coef == 0 or dead.tokens_seen < dead.dead_after_tokens:
        return loss, torch.zeros((), device=xn.device)
    # Reconstruct what the live latents missed from the dead latents with the largest
    # pre-activations (OpenAI's aux-k loss), so they get gradient and may come back. Live latents
    # are masked to -inf and contribute relu(-inf) = 0, so the number of dead latents is never
    # read back from the device.
    dead_mask = dead.mask()
    values, indices = pre.masked_fill(~dead_mask, -math.inf).topk(
        config.effective_aux_k, dim=-1, sorted=False
    )
    aux_codes = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    aux = ((aux_codes @ sae.w_dec) - error.detach()).pow(2).sum() / variance
    weight = (dead_mask.sum() / config.effective_aux_k).clamp(max=1.0)
    return loss + config.aux_coef * weight * aux, aux.detach() * dead_mask.any()


class _Window:
    """Metrics of the steps since the last record."""

    def __init__(self, d_in: int) -> None:
        self.d_in = d_in
        self._reset()

    def _reset(self) -> None:
        self.recon = ReconstructionMetrics(self.d_in)
        self.steps = 0
        self.loss: torch.Tensor | float = 0.0
        self.aux: torch.Tensor | float = 0.0

    def update(
        self,
        xn: torch.Tensor,
        recon: torch.Tensor,
        codes: torch.Tensor,
        loss: torch.Tensor,
        aux: torch.Tensor,
    ) -> None:
        self.recon.update(xn, recon, codes)
        self.steps += 1
        self.loss += loss
        self.aux += aux

    def record(self, step: int, tokens: int, dead: DeadLatents) -> Metrics:
        out: Metrics = {
            "step": step,
            "tokens": tokens,
            "loss": float(self.loss) / self.steps,
            "aux_loss": float(self.aux) / self.steps,
            "fvu": self.recon.fvu(),
            "l0": self.recon.l0(),
            "dead_fraction": dead.fraction(),
        }
        self._reset()
        return out


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, batches: Iterable[torch.Tensor]) -> Metrics:
    """FVU and L0 of an SAE in inference mode (BatchTopK: its threshold) on raw token batches."""
    was_training = sae.training
    sae.eval()
    device = sae.w_enc.device
    metrics = ReconstructionMetrics(sae.d_in)
    try:
        for batch in batches:
            x = batch.to(device, torch.float32)
            codes, _ = sae.encode(x)
            metrics.update(x, sae.decode(codes), codes)
    finally:
        sae.train(was_training)
    return {"fvu": metrics.fvu(), "l0": metrics.l0(), "tokens": metrics.tokens}
