"""Held-out scores of an explanation over a photo probe: how well the explanation, read as a
predictor on images the explainer never saw, predicts the unit's activation.

The measures are those NeuronEval (Oikarinen et al., "Evaluating Neuron Explanations: A Unified
Framework with Sanity Checks", 2025) found to pass its sanity checks: with the unit's binary
"fires" label (activation above the unit's threshold) on each held-out image,

- `auc`: the area under the ROC curve of the predictor against that label (ties count half);
- `pearson`: Pearson's r between the predictor and the raw activation (no threshold);
- `f1`: F1 of the predictor's own yes/no against the label. A 0/1 predictor (a formula) is its
  own yes/no; a continuous one (an image-text similarity) says yes on the same share of held-out
  images as the unit fires on over the images it was explained from (its `positive_share`, 10%
  at the 0.9 quantile): its top `round(share x n)` images (ties at the cut say no). So F1 needs
  no tuning on the held-out images, and a predictor that ranks like the unit gets F1 1;
- `auprc`: average precision of the predictor's ranking against the label.

The predictor of each kind of explanation is made in `coin_scale.eval.heldout_predictors`; this
module is pure numpy, and a unit whose threshold leaves no positive (or no negative) held-out
image gets no score and the reason, never an exception or a placeholder value.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from coin_scale.eval.detection import average_precision, detection
from coin_scale.eval.predictive import auc as roc_auc

TEST = "heldout"
"""The `scores.test` of these rows."""
METRICS = ("auc", "pearson", "f1", "auprc")
"""Their `scores.metric`s, in print order."""
QUANTILE = 0.9
"""A unit's threshold where its explanation carries none: this quantile of its activations over
the explained images (the offline explainer's default mask)."""
PREDICTORS = {
    "word_similarity": "the image-text similarity of the unit's concept word (clip)",
    "text_similarity": "the image-text similarity of the unit's free-text label (an LLM's)",
    "formula": "the formula over the folder's labels, 0/1 (offline)",
    "soft_formula": "the formula over image-text pseudo-attributes, read softly: a concept's "
    "margin above its split, AND = min, OR = max, NOT = minus; its 0/1 form gives F1 (clip-formula)",
}
"""What each predictor kind is (stored in `details`)."""
REASONS = {
    "no_positive": "no held-out image is above the unit's threshold",
    "all_positive": "every held-out image is above the unit's threshold",
    "no_text_model": "a free-text label with no image-text model to read it (--clip-model)",
}
"""Why an explanation has no held-out score."""


@dataclass(frozen=True, kw_only=True)
class HeldOutScore:
    """One unit's explanation scored on held-out images, or why it was not."""

    predictor: str
    """A key of `PREDICTORS`."""
    n_images: int
    """Held-out images scored on (the predictor readable on them)."""
    n_positive: int
    """Of them, images where the unit's activation is above `threshold`."""
    threshold: float
    """The unit's threshold (its mask's, over the images it was explained from)."""
    positive_share: float
    """Share of the explained images above `threshold` (a continuous predictor's F1 cut)."""
    auc: float | None = None
    pearson: float | None = None
    """None when the predictor is the same on every held-out image (r undefined)."""
    f1: float | None = None
    auprc: float | None = None
    reason: str | None = None
    """Why there is no score: a key of `REASONS`; None when scored."""
    note: str | None = None
    """The reason in a sentence, with its numbers (None when scored)."""

    @property
    def scored(self) -> bool:
        return self.reason is None

    def metrics(self) -> list[tuple[str, float]]:
        """(metric, value) of every measured metric, in `METRICS` order."""
        values = {"auc": self.auc, "pearson": self.pearson, "f1": self.f1, "auprc": self.auprc}
        return [(m, float(v)) for m, v in values.items() if v is not None]

    def summary(self) -> str:
        """`held-out AUC 0.91, r 0.62, F1 0.55, AUPRC 0.60 on 40 images (4 positive)`, or why
        there is none."""
        if not self.scored:
            return f"held-out: not scored ({self.note})"
        r = "—" if self.pearson is None else f"{self.pearson:.2f}"
        return (
            f"held-out AUC {self.auc:.2f}, r {r}, F1 {self.f1:.2f}, AUPRC {self.auprc:.2f} on "
            f"{self.n_images} images ({self.n_positive} above the unit's threshold)"
        )

    def details(self) -> str:
        """The `scores.details` JSON: the predictor and the numbers behind the metrics."""
        return json.dumps({
            "predictor": self.predictor, "n_images": self.n_images,
            "n_positive": self.n_positive, "threshold": self.threshold,
            "positive_share": round(self.positive_share, 6),
        })  # fmt: skip


def unit_threshold(activations: np.ndarray, quantile: float = QUANTILE) -> float:
    """The `quantile` of a unit's activations over the explained images (linear interpolation,
    as `torch.quantile` and the offline explainer)."""
    return float(np.quantile(np.asarray(activations, dtype=np.float64), quantile))


def score_predictor(
    predictor: np.ndarray,
    activations: np.ndarray,
    threshold: float,
    *,
    positive_share: float,
    kind: str,
    predicted: np.ndarray | None = None,
) -> HeldOutScore:
    """AUC, Pearson r, F1 and AUPRC of `predictor` for a unit on held-out images.

    predictor, activations: float (image,); a NaN predictor (an image the image-text model could
    not read) leaves its image out. predicted: bool (image,), the predictor's own yes/no (a
    formula's); None: yes on its top `positive_share` of images (see the module doc)."""
    if kind not in PREDICTORS:
        raise ValueError(f"kind: expected one of {', '.join(PREDICTORS)}; got {kind!r}")
    values = np.asarray(predictor, dtype=np.float64).ravel()
    acts = np.asarray(activations, dtype=np.float64).ravel()
    if values.shape != acts.shape:
        raise ValueError(f"{values.size} predictor values for {acts.size} activations")
    readable = ~np.isnan(values)
    values, acts = values[readable], acts[readable]
    if predicted is not None:
        predicted = np.asarray(predicted, dtype=bool).ravel()[readable]
    labels = acts > threshold
    n, positive = int(values.size), int(labels.sum())
    base = HeldOutScore(
        predictor=kind, n_images=n, n_positive=positive, threshold=float(threshold),
        positive_share=float(positive_share),
    )  # fmt: skip
    if positive == 0 or positive == n:
        side = "no" if positive == 0 else "every"
        note = f"{side} held-out image of {n} is above the unit's threshold {threshold:.4g}"
        return _with(base, reason="no_positive" if positive == 0 else "all_positive", note=note)
    if predicted is None:
        predicted = top_share(values, positive_share)
    f1 = detection(predicted.astype(np.float64), labels, 0.5).f1
    constant = bool(values.max() == values.min())
    pearson = None if constant else float(np.corrcoef(values, acts)[0, 1])
    return _with(
        base, auc=roc_auc(values[labels], values[~labels]), pearson=pearson, f1=f1,
        auprc=average_precision(values, labels),
    )  # fmt: skip


def top_share(values: np.ndarray, share: float) -> np.ndarray:
    """bool (image,): the top `round(share x n)` values (at least one), ties at the cut left out."""
    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    m = min(n, max(1, round(share * n)))
    if m == n:
        return np.ones(n, dtype=bool)
    cut = float(np.sort(values)[::-1][m])
    return values > cut


def _with(score: HeldOutScore, **changes: object) -> HeldOutScore:
    return replace(score, **changes)  # type: ignore[arg-type]


def median_auc(scores: Iterable[HeldOutScore]) -> float | None:
    """The median held-out AUC of the scored ones; None when none was scored."""
    values = [s.auc for s in scores if s.auc is not None]
    return float(statistics.median(values)) if values else None


def score_rows(
    scores: Mapping[int, HeldOutScore], *, run_id: str, layer: str, kind: str
) -> list[dict[str, object]]:
    """The `scores` table rows of one layer's held-out scores (test `heldout`; one row per
    measured metric; `details` names the predictor and the numbers of images and positives)."""
    rows: list[dict[str, object]] = []
    for unit, score in scores.items():
        details = score.details()
        rows += [
            {"run_id": run_id, "test": TEST, "metric": metric, "value": value, "layer": layer,
             "unit": unit, "kind": kind, "details": details}
            for metric, value in score.metrics()
        ]  # fmt: skip
    return rows
