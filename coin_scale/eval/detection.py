"""A unit as a detector of a concept: F1, IoU and AUPRC of its activations against 0/1 labels.

These sit next to every score (issue 8): unlike accuracy they hold up when a label is missing
(recall falls) or extra (precision falls), and AUPRC needs no threshold at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """How well `activation > threshold` finds the images of a concept."""

    f1: float
    iou: float
    auprc: float
    """Average precision over the ranking by activation (the area under the PR curve)."""
    threshold: float
    positives: int
    """Images carrying the concept."""
    predicted: int
    """Images above the threshold."""


def detection(activations: np.ndarray, labels: np.ndarray, threshold: float) -> Detection:
    """F1 and IoU of the thresholded activations, AUPRC of their ranking, against `labels`."""
    acts = np.asarray(activations, dtype=np.float64).ravel()
    truth = np.asarray(labels, dtype=bool).ravel()
    if acts.shape != truth.shape:
        raise ValueError(f"{acts.size} activations for {truth.size} labels")
    predicted = acts > threshold
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return Detection(
        f1=float(f1),
        iou=float(iou),
        auprc=average_precision(acts, truth),
        threshold=float(threshold),
        positives=int(truth.sum()),
        predicted=int(predicted.sum()),
    )


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of ranking by `scores` (ties share one step, as scikit-learn counts them);
    0.0 without positives."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(labels, dtype=bool).ravel()
    positives = int(truth.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_truth = scores[order], truth[order]
    # The last index of each run of equal scores: a threshold cannot split tied images.
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_scores))[0], scores.size - 1]
    tp = np.cumsum(sorted_truth)[last_of_tie]
    seen = last_of_tie + 1
    precision = tp / seen
    recall = tp / positives
    gained = np.diff(np.r_[0.0, recall])
    return float(np.sum(gained * precision))
