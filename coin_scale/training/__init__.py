"""Training coin-scale's own models: the ground-truth probe CNN."""

from coin_scale.training.probe_cnn import (
    TASKS,
    ProbeTask,
    ProbeTrainConfig,
    ProbeTrainResult,
    ensure_probe_cnn,
    save_probe_cnn,
    train_probe_cnn,
)

__all__ = [
    "TASKS",
    "ProbeTask",
    "ProbeTrainConfig",
    "ProbeTrainResult",
    "ensure_probe_cnn",
    "save_probe_cnn",
    "train_probe_cnn",
]
