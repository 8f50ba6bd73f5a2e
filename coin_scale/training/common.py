"""What the training loops share: per-stream seeds, torch thread counts, image statistics."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch


def stream_seed(seed: int, stream: int) -> int:
    """An independent integer seed per stream (0: training scenes, 1: held-out scenes)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with n torch intra-op threads (None: the CPUs this process may use), then restore."""
    before = torch.get_num_threads()
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, n or 1))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def mean_std(
    images: torch.Tensor, chunk: int = 1024
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and standard deviation in [0, 1] units of uint8 (n, 3, h, w) images,
    rounded to 4 decimals; summed a chunk at a time to keep memory flat."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.numel() / 3
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return (
        tuple(round(float(v), 4) for v in mean),  # type: ignore[return-value]
        tuple(round(float(v), 4) for v in std),
    )
