"""A perceptual similarity stand-in for MIS tests (testing only): minus the distance between two
images' mean RGB colours. Importable, so a similarity replica (a Ray actor) can load it by name
the way it loads DreamSim or LPIPS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mean_colour(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
    """(len(a), len(b)): minus the distance of the PIL images' mean RGB colours."""
    ma = np.array([np.asarray(im, float).mean(axis=(0, 1)) for im in a])
    mb = np.array([np.asarray(im, float).mean(axis=(0, 1)) for im in b])
    return -np.linalg.norm(ma[:, None] - mb[None, :], axis=-1)


def load_mean_colour(cache: str | None = None) -> Any:
    """The `SimilarityLoader` of `mean_colour` (no weights, `cache` unused)."""
    return mean_colour
