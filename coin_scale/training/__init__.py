"""Training coin-scale's own models: the ground-truth probe model."""

from coin_scale.training.probe_model import (
    TASKS,
    ProbeTask,
    ProbeTrainConfig,
    ProbeTrainResult,
    ensure_probe_model,
    save_probe_model,
    train_probe_model,
)

__all__ = [
    "TASKS",
    "ProbeTask",
    "ProbeTrainConfig",
    "ProbeTrainResult",
    "ensure_probe_model",
    "save_probe_model",
    "train_probe_model",
]
