"""SAE checkpoints: safetensors weights (input scale folded in) with the config and the final
metrics as JSON in the file's metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coin_scale.models.sae import SparseAutoencoder
from coin_scale.models.sae_config import SAEConfig
from coin_scale.sae.cache import write_atomic

CHECKPOINT_FORMAT = "coin-scale-sae"
CHECKPOINT_VERSION = "1"
_TENSORS = ("w_enc", "b_enc", "w_dec", "b_dec", "threshold")


def save_sae(
    path: str | Path, sae: SparseAutoencoder, config: SAEConfig, metrics: dict[str, Any]
) -> None:
    """Write `sae` (folded: it takes raw activations) atomically to `path`."""
    if (sae.d_in, sae.d_sae, sae.k, sae.kind) != (config.d_in, config.d_sae, config.k, config.kind):
        raise ValueError(f"the SAE ({sae.extra_repr()}) does not match its config {config}")
    folded = sae.folded()
    tensors = {name: getattr(folded, name).detach().float().cpu().contiguous() for name in _TENSORS}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "metrics": json.dumps(metrics, sort_keys=True),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_sae(
    path: str | Path,
    *,
    expect_model: str | None = None,
    expect_layer: str | None = None,
    expect_d_in: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SparseAutoencoder, SAEConfig, dict[str, Any]]:
    """(sae in eval mode, config, metrics) of a checkpoint, refusing one trained elsewhere."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no SAE checkpoint at {source}")
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = set(handle.keys())
            tensors = {n: handle.get_tensor(n) for n in _TENSORS if n in names}
    except Exception as err:  # safetensors raises its own error types for foreign files
        raise ValueError(
            f"{source} is not an SAE checkpoint (unreadable safetensors: {err})"
        ) from err
    if metadata.get("format") != CHECKPOINT_FORMAT or set(_TENSORS) - names:
        raise ValueError(
            f"{source} is not an SAE checkpoint (no {CHECKPOINT_FORMAT!r} metadata or missing "
            f"tensors {sorted(set(_TENSORS) - names)})"
        )
    config = SAEConfig.from_dict(json.loads(metadata["config"]))
    metrics = json.loads(metadata.get("metrics", "{}"))
    _check_identity(source, config, expect_model, expect_layer, expect_d_in)
    sae = SparseAutoencoder(config.d_in, config.d_sae, config.k, config.kind)
    with torch.no_grad():
        for name, tensor in tensors.items():
            target = getattr(sae, name)
            if target.shape != tensor.shape:
                raise ValueError(
                    f"{source}: tensor {name} has shape {tuple(tensor.shape)}, its config "
                    f"says {tuple(target.shape)}"
                )
            target.copy_(tensor)
    return sae.to(device).eval(), config, metrics


def _check_identity(
    source: Path,
    config: SAEConfig,
    model: str | None,
    layer: str | None,
    d_in: int | None,
) -> None:
    expected = (
        config.model if model is None else model,
        config.layer if layer is None else layer,
        config.d_in if d_in is None else d_in,
    )
    if expected == (config.model, config.layer, config.d_in):
        return
    raise ValueError(
        f"the SAE at {source} was trained on {config.model} {config.layer} ({config.d_in} "
        f"channels); this run uses {expected[0]} {expected[1]} ({expected[2]}); train an SAE "
        f"for this layer or pass the matching checkpoint"
    )
