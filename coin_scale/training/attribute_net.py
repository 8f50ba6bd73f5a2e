"""The attribute net: a small multi-head CNN that reads a single-object scene's attributes.

It predicts, from pixels, every attribute of `unity_pool.vocab.ATTRIBUTES` that varies between
scenes of one large object (`ATTRIBUTE_HEADS`: shape, color, texture, background, position,
light). n_objects and size are fixed (`ATTRIBUTE_NET_FIXED`): which object of a crowded scene is
"the main one" cannot be seen, and a small object's shape and texture are a few pixels at 64 px.
Its output is one logit per concept (`attribute=value`, vocabulary order), one softmax group per
attribute. The synthetic units of
`coin_scale.models.synthetic_model` read their formulas' concepts from it, so they respond to
pixels and can be dissected, edited and rendered for like any model.

Training follows the probe CNN's recipe (`coin_scale.training.probe_cnn`: rendered scenes,
AdamW with a one-cycle schedule, held-out scenes from another seed, a cached checkpoint) with one
cross-entropy per attribute; the scenes come from the probe-set sampler with
`ATTRIBUTE_NET_FIXED`, exactly like `rendered_probe(..., single_object=True)`, the probe set of
`coin-scale eval synthetic --through model`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from coin_scale.cache import cache_root
from coin_scale.models.attribute_net import (
    ARCH,
    ATTRIBUTE_NET_FIXED,
    AttributeNet,
    concept_names,
    head_spec,
)
from coin_scale.models.checkpoint import save_checkpoint
from coin_scale.models.preprocess import Preprocess
from coin_scale.training.common import mean_std, stream_seed, torch_threads

log = logging.getLogger(__name__)

ATTRIBUTE_NET_VERSION = 1
"""Bumped when the data, architecture or recipe change, so cached checkpoints are retrained."""

@dataclass(frozen=True, kw_only=True)
class AttributeTrainConfig:
    """How to train the attribute net. The defaults take about 2-3 minutes on 2 CPU cores and
    reach held-out accuracies of ~0.78 (shape), ~0.75 (texture), > 0.97 (the others)."""

    size: int = 64
    """Image side in pixels, for training and for the saved `Preprocess` (resize == crop)."""
    n_train: int = 16000
    """Training scenes, rendered once up front."""
    n_val: int = 2000
    """Held-out scenes, rendered from a different seed."""
    epochs: int = 8
    """Passes over the training scenes."""
    batch_size: int = 64
    """Scenes per optimiser step."""
    lr: float = 3e-3
    """Peak learning rate of AdamW's one-cycle schedule."""
    weight_decay: float = 5e-4
    """AdamW's decoupled weight decay."""
    width: int = 128
    """Channels of the last block."""
    seed: int = 0
    """Seeds scenes, initialisation and shuffling."""
    threads: int | None = None
    """torch intra-op threads while training; None: the CPUs this process may use."""

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1; got {getattr(self, name)}")
        if not 16 <= self.size <= 512:
            raise ValueError(f"size: expected 16..512 pixels; got {self.size}")
        steps = -(-self.n_train // self.batch_size) * self.epochs
        if steps < 8:
            raise ValueError(
                f"n_train, batch_size, epochs: expected >= 8 optimiser steps for the one-cycle "
                f"schedule; got {steps}. Fix: more n_train or epochs, or a smaller batch_size."
            )


@dataclass(frozen=True, kw_only=True)
class AttributeTrainResult:
    """What training produced, besides the weights."""

    heads: list[list[Any]]
    """[[attribute, [values]], ...]: the net's output groups."""
    preprocess: Preprocess
    """resize == crop == the training size; mean and std measured on the training scenes."""
    val_accuracy: dict[str, float]
    """Held-out accuracy per attribute (argmax of its group against the rendered truth)."""
    seconds: float
    """Wall time of rendering plus training."""
    config: AttributeTrainConfig


def render_attribute_dataset(
    heads: Sequence[Sequence[Any]], n: int, seed: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n single-object scenes -> (uint8 images (n, 3, size, size), int64 targets (n, attribute):
    each attribute's value index in its head)."""
    from unity_pool.attributes import scene_attributes
    from unity_pool.procedural.draw import render_array
    from unity_pool.sampling import sample_scenes

    scenes = sample_scenes(n, seed, width=size, height=size, fixed=dict(ATTRIBUTE_NET_FIXED))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    targets = torch.empty((n, len(heads)), dtype=torch.int64)
    index = [{str(v): i for i, v in enumerate(values)} for _, values in heads]
    for row, scene in enumerate(scenes):
        images[row] = render_array(scene)
        truth = scene_attributes(scene)
        for column, (attribute, _) in enumerate(heads):
            targets[row, column] = index[column][str(truth[attribute])]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), targets


@torch.inference_mode()
def attribute_accuracy(
    net: AttributeNet,
    images: torch.Tensor,
    targets: torch.Tensor,
    heads: Sequence[Sequence[Any]],
    pre: Preprocess,
    batch: int = 512,
) -> dict[str, float]:
    """Per attribute: the share of images whose group argmax is the target value."""
    net.eval()
    correct = torch.zeros(len(heads), dtype=torch.int64)
    for start in range(0, len(images), batch):
        x = pre.normalize(images[start : start + batch])
        logits = net(x.contiguous(memory_format=torch.channels_last))
        groups = torch.split(logits, net.group_sizes, dim=1)
        guess = torch.stack([g.argmax(1) for g in groups], dim=1)
        correct += (guess == targets[start : start + batch]).sum(0)
    return {a: int(c) / max(1, len(images)) for (a, _), c in zip(heads, correct, strict=True)}


def train_attribute_net(
    config: AttributeTrainConfig, heads: Sequence[Sequence[Any]] | None = None
) -> tuple[AttributeNet, AttributeTrainResult]:
    """Render the scenes and train the net on them; returns it (eval mode) and the result."""
    groups = [list(h) for h in (heads or head_spec())]
    started = time.perf_counter()
    with torch_threads(config.threads) as threads:
        log.info(
            "attribute net: %s; %d train / %d held-out scenes at %d px, %d epochs, %d threads",
            ", ".join(a for a, _ in groups), config.n_train, config.n_val, config.size,
            config.epochs, threads,
        )  # fmt: skip
        train_x, train_y = render_attribute_dataset(
            groups, config.n_train, stream_seed(config.seed, 0), config.size
        )
        val_x, val_y = render_attribute_dataset(
            groups, config.n_val, stream_seed(config.seed, 1), config.size
        )
        mean, std = mean_std(train_x)
        pre = Preprocess(resize=config.size, crop=config.size, mean=mean, std=std)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = AttributeNet(heads=groups, width=config.width)
        net = net.to(memory_format=torch.channels_last)  # faster CPU convolutions
        _fit(net, train_x, train_y, pre, config)
        accuracy = attribute_accuracy(net, val_x, val_y, groups, pre)
        net = net.to(memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - started
    log.info(
        "attribute net trained in %.0fs; held-out accuracy %s", seconds,
        ", ".join(f"{a} {v:.3f}" for a, v in accuracy.items()),
    )  # fmt: skip
    result = AttributeTrainResult(
        heads=groups, preprocess=pre, val_accuracy=accuracy, seconds=seconds, config=config
    )
    return net.eval(), result


def _fit(
    net: AttributeNet,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    pre: Preprocess,
    config: AttributeTrainConfig,
) -> None:
    """AdamW with a one-cycle schedule; the loss is the sum of one cross-entropy per attribute."""
    steps = -(-len(train_x) // config.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps * config.epochs, pct_start=0.25
    )
    generator = torch.Generator().manual_seed(stream_seed(config.seed, 2))
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        loss_sum = 0.0
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = pre.normalize(train_x[idx]).contiguous(memory_format=torch.channels_last)
            logits = torch.split(net(x), net.group_sizes, dim=1)
            target = train_y[idx]
            loss = sum(
                (F.cross_entropy(g, target[:, i]) for i, g in enumerate(logits)),
                torch.zeros(()),
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(idx)
        log.info("epoch %d/%d: loss %.3f", epoch, config.epochs, loss_sum / len(train_x))


def save_attribute_net(path: str | Path, net: AttributeNet, result: AttributeTrainResult) -> Path:
    """A coin-scale checkpoint (arch `attribute_net`; classes: the concept names) that
    `--model PATH` loads and `coin_scale.models.synthetic_model` builds synthetic units on."""
    config = result.config
    extra: dict[str, Any] = {
        "val_accuracy": dict(result.val_accuracy),
        "seconds": result.seconds,
        "seed": config.seed,
        "n_train": config.n_train,
        "n_val": config.n_val,
        "epochs": config.epochs,
        "size": config.size,
        "fixed": [list(pair) for pair in ATTRIBUTE_NET_FIXED],
        "attribute_net_version": ATTRIBUTE_NET_VERSION,
    }
    return save_checkpoint(
        path, net, arch=ARCH, class_names=list(concept_names(result.heads)),
        preprocess=result.preprocess,
        arch_kwargs={"heads": result.heads, "width": config.width}, extra=extra,
    )  # fmt: skip


def attribute_net_path(cache_dir: Path | None = None) -> Path:
    """Where the default attribute net is cached: `<cache>/attribute_net_v<N>.pt`."""
    return Path(cache_dir or cache_root()) / f"attribute_net_v{ATTRIBUTE_NET_VERSION}.pt"


def ensure_attribute_net(
    cache_dir: Path | None = None, *, config: AttributeTrainConfig | None = None
) -> Path:
    """The cached attribute-net checkpoint, trained (about 2-3 minutes) and cached on first use."""
    from coin_scale.errors import UserError
    from coin_scale.models.checkpoint import read_checkpoint

    path = attribute_net_path(cache_dir)
    if path.is_file():
        try:
            read_checkpoint(path)
            return path
        except UserError as err:
            log.warning("cached attribute net is unusable (%s); training it again", err)
    log.info("no cached attribute net at %s: training it now (about 2-3 minutes on 2 CPUs)", path)
    net, result = train_attribute_net(config or AttributeTrainConfig())
    save_attribute_net(path, net, result)
    log.info("attribute net cached at %s", path)
    return path
