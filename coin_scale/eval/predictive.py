"""Predictive score of an explanation (MAIA, CoSy): does the unit fire more on images that satisfy
its explanation than on images that do not?

An explanation that is a formula over rendered attributes splits any rendered image set into the
images that satisfy it and the rest; the score is the AUC (the chance that a random satisfying
image out-activates a random other one, ties counting half) and Cohen's d of the unit's
activations between the two sets, with F1, IoU and AUPRC of the unit as a detector of the
formula beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coin_scale.concepts.formula import Formula, evaluate
from coin_scale.eval.detection import Detection, detection
from coin_scale.eval.interpscore import cohens_d


@dataclass(frozen=True)
class PredictiveScore:
    """AUC and Cohen's d of a unit between satisfying and other images, and its detection."""

    auc: float
    cohens_d: float
    n_satisfying: int
    n_other: int
    detection: Detection
    """F1 and IoU at the cut that marks as many images as satisfy the formula; AUPRC."""


def auc(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray) -> float:
    """P(a random positive > a random negative) + half the ties (the Mann-Whitney U / (n m))."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"AUC needs images on both sides, got {pos.size} and {neg.size}")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    sorted_values = both[order]
    # Average ranks over ties (1-based): each run of equal values shares its mean rank.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], both.size] - 1
    group = np.repeat(np.arange(starts.size), ends - starts + 1)
    ranks = np.empty(both.size, dtype=np.float64)
    ranks[order] = ((starts + ends) / 2.0 + 1.0)[group]
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def predictive_score(satisfying: np.ndarray, other: np.ndarray) -> PredictiveScore:
    """The unit's activations on the two sets -> its predictive score."""
    sat = np.asarray(satisfying, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    acts = np.concatenate([sat, oth])
    labels = np.r_[np.ones(sat.size, bool), np.zeros(oth.size, bool)]
    # Mark the top len(sat) images: at this cut precision = recall = F1.
    cut = float(np.sort(acts)[::-1][sat.size]) if oth.size else -np.inf
    return PredictiveScore(
        auc=auc(sat, oth),
        cohens_d=cohens_d(sat, oth),
        n_satisfying=int(sat.size),
        n_other=int(oth.size),
        detection=detection(acts, labels, cut),
    )


def attribute_concepts(
    attributes: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> torch.Tensor:
    """bool (concept, image): which image shows which `<attribute>=<value>` concept."""
    rows = []
    for name in names:
        attribute, _, value = name.partition("=")
        rows.append([str(a.get(attribute)) == value for a in attributes])
    return torch.tensor(rows, dtype=torch.bool).reshape(len(names), len(attributes))


def satisfies(
    formula: Formula, attributes: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> np.ndarray:
    """bool (image,): the images whose attributes satisfy `formula` (over concept `names`)."""
    if not attributes:
        return np.zeros(0, dtype=bool)
    return evaluate(formula, attribute_concepts(attributes, names)).numpy().astype(bool)


def satisfying_targets(
    formula: Formula,
    names: Sequence[str],
    n: int,
    rng: np.random.Generator,
    values: Mapping[str, Sequence[Any]],
    *,
    max_draws: int = 100_000,
) -> list[dict[str, Any]]:
    """Up to n attribute assignments (one value per attribute of `values`, drawn uniformly) that
    satisfy `formula`: scenes to render for an explanation too narrow for a random set."""
    out: list[dict[str, Any]] = []
    batch = 512
    drawn = 0
    while len(out) < n and drawn < max_draws:
        targets = [
            {name: options[int(i)] for name, options in values.items()
             for i in [rng.integers(len(options))]}
            for _ in range(batch)
        ]  # fmt: skip
        drawn += batch
        keep = satisfies(formula, targets, names)
        out += [t for t, ok in zip(targets, keep, strict=True) if ok][: n - len(out)]
    return out
