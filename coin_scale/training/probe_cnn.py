"""The probe CNN, a model with known ground truth: a small CNN trained on procedurally rendered
scenes.

The class of an image is an attribute of its only object (its shape, or its shape and colour),
so what the model's units should respond to is known by construction. Images come from
`unity_pool`'s procedural renderer (single-object scenes with the sampler's balanced colours,
textures, backgrounds, positions and lighting); held-out scenes come from a different seed.
Everything is seeded locally: the same config gives the same weights on the same machine and
thread count.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from coin_scale.cache import cache_root
from coin_scale.models.checkpoint import save_checkpoint
from coin_scale.models.preprocess import Preprocess
from coin_scale.models.zoo import build
from coin_scale.training.common import mean_std, stream_seed, torch_threads
from unity_pool import vocab

log = logging.getLogger(__name__)

ARCH = "probe_cnn"
"""The zoo architecture of the probe CNN."""

PROBE_CNN_VERSION = 1
"""Bumped when the data, architecture or recipe change, so cached checkpoints are retrained."""

OBJECT_SIZE = (0.35, 0.55)
"""Diameter range of the object (fraction of the image side): large enough to read at 64 px."""


@dataclass(frozen=True, kw_only=True)
class ProbeTask:
    """What the classes are: one per shape, or one per (colour, shape) pair."""

    name: str
    shapes: tuple[str, ...]
    """Shapes of the objects, from `unity_pool.vocab.SHAPES`."""
    colors: tuple[str, ...] | None
    """Colours that are part of the class; None: colour is a nuisance drawn by the sampler."""

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.colors is None:
            return self.shapes
        return tuple(f"{c}_{s}" for c in self.colors for s in self.shapes)


TASKS: dict[str, ProbeTask] = {
    "shape": ProbeTask(name="shape", shapes=vocab.SHAPES, colors=None),
    "shape_color": ProbeTask(
        name="shape_color",
        shapes=("circle", "square", "triangle", "star"),
        colors=("red", "green", "blue"),
    ),
}
"""The probe tasks by name: `shape` (10 classes), `shape_color` (12 colour x shape classes)."""


def get_task(name: str) -> ProbeTask:
    """The task called `name`; unknown names list the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown probe task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


@dataclass(frozen=True, kw_only=True)
class ProbeTrainConfig:
    """How to train the probe CNN. The defaults reach ~93% held-out accuracy (task shape) in
    ~2 minutes on 2 CPU cores."""

    task: str = "shape"
    """A name from `TASKS`."""
    size: int = 64
    """Image side in pixels, for training and for the saved `Preprocess` (resize == crop)."""
    n_train: int = 16000
    """Training images, rendered once up front."""
    n_val: int = 2000
    """Held-out images, rendered from a different seed."""
    epochs: int = 8
    """Passes over the training images."""
    batch_size: int = 64
    """Images per optimiser step."""
    lr: float = 2e-3
    """Peak learning rate of AdamW's one-cycle schedule."""
    weight_decay: float = 5e-4
    """AdamW's decoupled weight decay."""
    width: int = 128
    """Channels of `layer4`, the block whose units attribute exactly to the logits."""
    seed: int = 0
    """Seeds scenes, initialisation and shuffling."""
    threads: int | None = None
    """torch intra-op threads while training; None: the CPUs this process may use."""
    progress: bool = True
    """Show tqdm bars (rendering, each epoch)."""

    def __post_init__(self) -> None:
        get_task(self.task)
        for name in ("n_train", "n_val", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1; got {getattr(self, name)}")
        if not 16 <= self.size <= 512:
            raise ValueError(f"size: expected 16..512 pixels; got {self.size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: expected >= 1 or None; got {self.threads}")


@dataclass(frozen=True, kw_only=True)
class ProbeTrainResult:
    """What training produced, besides the weights."""

    task: str
    class_names: tuple[str, ...]
    preprocess: Preprocess
    """resize == crop == the training size; mean and std measured on the training images."""
    train_accuracy: float
    """Accuracy over the last epoch's batches, in training mode (no augmentation is used)."""
    val_accuracy: float
    """Accuracy on the held-out images after training."""
    seconds: float
    """Wall time of rendering plus training."""
    config: ProbeTrainConfig


def render_dataset(
    task: ProbeTask, n: int, seed: int, size: int, *, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """n single-object scenes -> (uint8 images (n, 3, size, size) in channels_last, int64 labels
    (n,)); classes are balanced."""
    from tqdm import tqdm

    from unity_pool.procedural import render_array
    from unity_pool.sampling import balanced_column, sample_scenes

    rng = np.random.default_rng(seed)
    labels = balanced_column(rng, tuple(range(len(task.class_names))), n)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    scenes = sample_scenes(n, seed, width=size, height=size)
    bar = tqdm(total=n, desc="render", unit="img", disable=not progress, leave=False)
    for i, (scene, label) in enumerate(zip(scenes, labels, strict=True)):
        shape = task.shapes[label % len(task.shapes)]
        color = scene.main.color if task.colors is None else task.colors[label // len(task.shapes)]
        main = dataclasses.replace(
            scene.main, shape=shape, color=color, size=round(float(rng.uniform(*OBJECT_SIZE)), 4)
        )
        images[i] = render_array(dataclasses.replace(scene, objects=(main,)))
        bar.update()
    bar.close()
    return torch.from_numpy(images).permute(0, 3, 1, 2), torch.tensor(labels, dtype=torch.int64)


@torch.inference_mode()
def accuracy(
    module: nn.Module, images: torch.Tensor, labels: torch.Tensor, pre: Preprocess, batch: int = 512
) -> float:
    """Fraction of `images` (uint8 (n, 3, h, w)) whose argmax logit is the label."""
    module.eval()
    correct = 0
    for start in range(0, len(images), batch):
        x = pre.normalize(images[start : start + batch]).contiguous(
            memory_format=torch.channels_last
        )
        correct += int((module(x).argmax(1) == labels[start : start + batch]).sum())
    return correct / max(1, len(images))


def train_probe_cnn(config: ProbeTrainConfig) -> tuple[nn.Module, ProbeTrainResult]:
    """Render the scenes and train `probe_cnn` on them; returns the model (eval mode,
    contiguous format) and the result."""
    started = time.perf_counter()
    task = get_task(config.task)
    with torch_threads(config.threads) as threads:
        log.info(
            "probe CNN: task %s, %d classes, %d train / %d held-out images at %d px, %d epochs, "
            "%d threads", task.name, len(task.class_names), config.n_train, config.n_val,
            config.size, config.epochs, threads,
        )  # fmt: skip
        train_x, train_y = render_dataset(
            task, config.n_train, stream_seed(config.seed, 0), config.size, progress=config.progress
        )
        val_x, val_y = render_dataset(task, config.n_val, stream_seed(config.seed, 1), config.size)
        mean, std = mean_std(train_x)
        pre = Preprocess(resize=config.size, crop=config.size, mean=mean, std=std)
        log.info("rendered in %.1fs; mean %s std %s", time.perf_counter() - started, mean, std)
        module = _init_model(config, len(task.class_names))
        train_acc = _fit(module, train_x, train_y, val_x, val_y, pre, config)
        val_acc = accuracy(module, val_x, val_y, pre)
    module = module.to(memory_format=torch.contiguous_format).eval()
    seconds = time.perf_counter() - started
    log.info("probe CNN trained in %.0fs: held-out accuracy %.3f", seconds, val_acc)
    result = ProbeTrainResult(
        task=task.name, class_names=task.class_names, preprocess=pre, train_accuracy=train_acc,
        val_accuracy=val_acc, seconds=seconds, config=config,
    )  # fmt: skip
    return module, result


def _init_model(config: ProbeTrainConfig, num_classes: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = build(ARCH, num_classes=num_classes, width=config.width)
    return module.to(memory_format=torch.channels_last)


def _fit(
    module: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    pre: Preprocess,
    config: ProbeTrainConfig,
) -> float:
    """AdamW with a one-cycle schedule; returns the last epoch's training accuracy."""
    from tqdm import tqdm

    steps = -(-len(train_x) // config.batch_size)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps * config.epochs, pct_start=0.25
    )
    generator = torch.Generator().manual_seed(stream_seed(config.seed, 2))
    train_acc = 0.0
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = torch.randperm(len(train_x), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps), desc=f"epoch {epoch}/{config.epochs}", unit="batch",
            disable=not config.progress, leave=False,
        )  # fmt: skip
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = pre.normalize(train_x[idx]).contiguous(memory_format=torch.channels_last)
            y = train_y[idx]
            logits = module(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        train_acc = correct / seen
        val_acc = accuracy(module, val_x, val_y, pre)
        log.info(
            "epoch %d/%d: loss %.3f, train accuracy %.3f, held-out accuracy %.3f",
            epoch, config.epochs, loss_sum / seen, train_acc, val_acc,
        )  # fmt: skip
    return train_acc


def save_probe_cnn(path: str | Path, module: nn.Module, result: ProbeTrainResult) -> Path:
    """Write a coin-scale checkpoint that `--model PATH` loads (arch `probe_cnn`)."""
    config = result.config
    extra: dict[str, Any] = {
        "task": result.task,
        "train_accuracy": result.train_accuracy,
        "val_accuracy": result.val_accuracy,
        "seconds": result.seconds,
        "seed": config.seed,
        "n_train": config.n_train,
        "n_val": config.n_val,
        "epochs": config.epochs,
        "size": config.size,
        "probe_model_version": PROBE_CNN_VERSION,  # the stored key keeps its name
    }
    return save_checkpoint(
        path, module, arch=ARCH, class_names=list(result.class_names),
        preprocess=result.preprocess,
        arch_kwargs={"num_classes": len(result.class_names), "width": config.width},
        extra=extra,
    )  # fmt: skip


def ensure_probe_cnn(
    cache_dir: Path | None = None, *, task: str = "shape", config: ProbeTrainConfig | None = None
) -> Path:
    """The cached probe CNN checkpoint for `task`, trained (and cached) on first use.

    The file is `<cache_dir>/probe_model_<task>_v<PROBE_CNN_VERSION>.pt` (the name cached
    checkpoints and their model ids already have); `config` overrides the default training
    recipe (its task must be `task`).
    """
    from coin_scale.errors import UserError
    from coin_scale.models.checkpoint import read_checkpoint

    config = config or ProbeTrainConfig(task=task, progress=False)
    if config.task != task:
        raise ValueError(f"config.task {config.task!r} differs from task {task!r}")
    path = Path(cache_dir or cache_root()) / f"probe_model_{task}_v{PROBE_CNN_VERSION}.pt"
    if path.is_file():
        try:
            read_checkpoint(path)
            return path
        except UserError as err:
            log.warning("cached probe CNN is unusable (%s); training it again", err)
    log.info(
        "no cached probe CNN for task %s at %s: training it now (about 2 minutes on 2 CPUs)",
        task,
        path,
    )
    module, result = train_probe_cnn(config)
    save_probe_cnn(path, module, result)
    log.info(
        "probe CNN for task %s trained in %.0fs (held-out accuracy %.3f) and cached at %s",
        task, result.seconds, result.val_accuracy, path,
    )  # fmt: skip
    return path
