"""The pure figures of `coin-scale bench sae` (no Ray, no files): IoU summaries of explanations,
neurons against SAE features on the same explainer, masks of the same size (top-n), score
distributions and the issue's targets. `coin_scale.bench.sae_bench` runs the benchmark."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.explain import OfflineExplainerConfig, explain_units
from coin_scale.explain.explanation import Explanation
from coin_scale.explain.offline import search_formulas
from coin_scale.models.activations import reduce_units, sae_code_maps
from coin_scale.models.sae import SparseAutoencoder

if TYPE_CHECKING:
    from coin_scale.eval.explanation_scores import UnitScores

TARGETS = {"fvu": 0.10, "l0": 32.0, "dead_fraction": 0.10}
"""Issue 6's targets: FVU at most 0.10 at L0 at most 32, at most 10% dead latents (and features
more interpretable than neurons by mean IoU)."""
GOOD_IOU = 0.5
"""An explanation with at least this IoU counts as a good one (`fraction_iou_ge_0_5`)."""
FULL_MASK_SHARE = 0.9
"""A unit's mask is full when it holds at least this share of the (1 - quantile) x images the
quantile leaves above the threshold. A unit active on fewer images (a sparse SAE feature) has a
smaller mask, and the formula search fits small masks well by chance (`chance_mean_iou`)."""


def iou_summary(
    explanations: Sequence[Explanation], *, full_mask: int | None = None
) -> dict[str, Any]:
    """IoU figures of one layer's explanations.

    `mean_iou` and `median_iou` are over the explained units only; `mean_iou_all` counts every
    unit the explainer could not explain (constant, empty mask, no overlap) as IoU 0;
    `fraction_iou_ge_0_5` is over the explained units. With `full_mask` (images), also
    `full_mask_units` and `mean_iou_full_mask`: the explained units whose mask holds at least
    that many images, and their mean IoU."""
    ious = [e.iou for e in explanations if e.ok and e.iou is not None]
    statuses = Counter(e.status for e in explanations)
    reasons = Counter(e.reason for e in explanations if e.reason)
    units = len(explanations)
    summary: dict[str, Any] = {
        "units": units,
        "explained": len(ious),
        "mean_iou": statistics.fmean(ious) if ious else None,
        "mean_iou_all": sum(ious) / units if units else None,
        "median_iou": statistics.median(ious) if ious else None,
        "fraction_iou_ge_0_5": sum(i >= GOOD_IOU for i in ious) / len(ious) if ious else None,
        "statuses": dict(sorted(statuses.items())),
        "reasons": dict(sorted(reasons.items())),
    }
    if full_mask is not None:
        full = [
            e.iou for e in explanations
            if e.ok and e.iou is not None and (e.mask_size or 0) >= full_mask
        ]  # fmt: skip
        summary["full_mask_units"] = len(full)
        summary["mean_iou_full_mask"] = statistics.fmean(full) if full else None
    return summary


def pooled_units(maps: torch.Tensor, sae: SparseAutoencoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(neurons (image, channel), features (image, d_sae)): a conv layer's maps (image, channel,
    height, width) and its SAE codes, each reduced by max over space, as a dissection does."""
    with torch.inference_mode():
        features = reduce_units(sae_code_maps(sae)(maps), "nchw", "max")
    return reduce_units(maps, "nchw", "max"), features


def compare_units(
    neurons: torch.Tensor,
    features: torch.Tensor,
    concepts: ConceptMatrix,
    explainer: OfflineExplainerConfig,
    *,
    generator: torch.Generator | None = None,
    explained: Mapping[str, Sequence[Explanation]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The offline explainer's IoU summary for neurons and for SAE features, both (image, unit)
    over the same images, explained with the same configuration. `full_mask_units` and
    `mean_iou_full_mask` count the units whose mask is full (`FULL_MASK_SHARE`). `explained`:
    each kind's `explain_units` already made, so they are not made twice.

    With a `generator`, each summary also has `chance_mean_iou`: the mean IoU over explained
    units of the same activations with the images shuffled (one permutation for both kinds), so
    every unit keeps its mask size but loses any relation to the concepts. It is the IoU the
    formula search finds by chance for masks of those sizes."""
    if neurons.shape[0] != features.shape[0]:
        raise ValueError(
            f"neurons cover {neurons.shape[0]} images and features {features.shape[0]}; "
            "both must be measured on the same images"
        )
    n_images = neurons.shape[0]
    full_mask = math.floor(FULL_MASK_SHARE * (1 - explainer.quantile) * n_images)
    order = None if generator is None else torch.randperm(n_images, generator=generator)
    result: dict[str, dict[str, Any]] = {}
    for kind, matrix in (("neurons", neurons), ("features", features)):
        made = explained[kind] if explained else explain_units(matrix, concepts, explainer)
        result[kind] = iou_summary(made, full_mask=full_mask)
        if order is not None:
            chance = iou_summary(explain_units(matrix[order], concepts, explainer))
            result[kind]["chance_mean_iou"] = chance["mean_iou"]
    return result


SCORE_METRICS: dict[str, str] = {
    "auc": "predictive AUC",
    "cohens_d": "Cohen's d",
    "f1": "F1",
    "auprc": "AUPRC",
    "S": "S",
    "C": "C",
    "R": "R",
    "interp_score": "InterpScore (S, C, R)",
}
"""The per-explanation scores `score_summary` summarises, with their names in the table."""


def _score_values(score: UnitScores) -> dict[str, float | None]:
    p, i = score.predictive, score.interp
    return {
        "auc": p.auc if p else None,
        "cohens_d": p.cohens_d if p else None,
        "f1": p.detection.f1 if p else None,
        "auprc": p.detection.auprc if p else None,
        "S": i.S if i else None,
        "C": i.C if i else None,
        "R": i.R if i else None,
        "interp_score": i.score if i else None,
    }


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, quartiles (numpy's linear interpolation), min and max of the finite `values`;
    `non_finite` counts the others (a Cohen's d of +-inf: both sides constant)."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    out: dict[str, Any] = {"n": int(finite.size), "non_finite": int(array.size - finite.size)}
    if not finite.size:
        return {**out, "mean": None, "q1": None, "median": None, "q3": None, "min": None,
                "max": None}  # fmt: skip
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    return {
        **out, "mean": float(finite.mean()), "q1": float(q1), "median": float(median),
        "q3": float(q3), "min": float(finite.min()), "max": float(finite.max()),
    }  # fmt: skip


def _note_kind(note: str) -> str:
    if note in ("no formula to score", "formula not over rendered attributes"):
        return note
    return "too few scoring images satisfy the formula (or all but too few)"


def score_summary(scores: Sequence[UnitScores]) -> dict[str, Any]:
    """The distribution (`distribution`) of every `SCORE_METRICS` score over one unit kind's
    scored explanations; `units` counts every unit, `scorable` those with scores, `notes` why
    the others have none."""
    scored = [s for s in scores if s.note is None and s.predictive is not None]
    notes: dict[str, int] = {}
    for s in scores:
        if s.note is not None:
            notes[_note_kind(s.note)] = notes.get(_note_kind(s.note), 0) + 1
    values = [_score_values(s) for s in scored]
    metrics = {
        name: distribution([x for v in values if (x := v[name]) is not None])
        for name in SCORE_METRICS
    }
    return {
        "units": len(scores),
        "scorable": len(scored),
        "notes": dict(sorted(notes.items())),
        "metrics": metrics,
    }


def format_score_table(scores: dict[str, Any], subset: str | None = None) -> str:
    """A Markdown table of `scores` (the report's `scores`): per metric, neurons / features;
    with `subset` (`full_mask`), of that subset of each kind."""

    def cell(d: dict[str, Any], key: str) -> str:
        return "n/a" if d[key] is None else f"{d[key]:.3f}"

    kinds = ("neurons", "features")
    of = {k: scores[k][subset] if subset else scores[k] for k in kinds}
    lines = [
        f"scorable{' ' + subset.replace('_', '-') + ' units' if subset else ''}: "
        f"neurons {of['neurons']['scorable']} of {of['neurons']['units']}, "
        f"features {of['features']['scorable']} of {of['features']['units']} "
        f"({scores['images']} scoring images)",
        "",
        "| score | median (neurons / features) | quartiles Q1-Q3 | mean |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in SCORE_METRICS.items():
        ds = [of[k]["metrics"][name] for k in kinds]
        lines.append(
            f"| {label} | {' / '.join(cell(d, 'median') for d in ds)} | "
            + " / ".join(f"{cell(d, 'q1')}-{cell(d, 'q3')}" for d in ds)
            + f" | {' / '.join(cell(d, 'mean') for d in ds)} |"
        )
    return "\n".join(lines)


def top_n_masks(activations: torch.Tensor, n: int) -> torch.Tensor:
    """bool (unit, image): each unit's `n` images of highest activation, from (image, unit)
    activations. Ties go to the earlier image, so a unit active on fewer than `n` images gets
    all of them plus the first of the images it is silent on (the same rule for every unit)."""
    if not 1 <= n <= activations.shape[0]:
        raise ValueError(f"top-n mask size {n} is not between 1 and {activations.shape[0]} images")
    order = torch.sort(activations.float(), dim=0, descending=True, stable=True).indices[:n]
    masks = torch.zeros(activations.shape[1], activations.shape[0], dtype=torch.bool)
    return masks.scatter_(1, order.T.contiguous(), True)


def top_n_summary(
    activations: torch.Tensor, concepts: ConceptMatrix, explainer: OfflineExplainerConfig, n: int
) -> dict[str, Any]:
    """The same-size comparison of one unit kind: every unit that fires (activation > 0 on at
    least one image) is explained on its top-`n` mask (`top_n_masks`) with the explainer's beam
    search, so neurons and sparse features are judged on masks of one size.

    `mean_iou` and `median_iou` (the lower median) are over the units that fire;
    `mean_iou_full` over those active on at least `n` images (their whole mask is their own
    firing images), `full_units` of them."""
    acts = activations.detach().cpu().float()
    fires = acts.amax(dim=0) > 0
    active_images = (acts > 0).sum(dim=0)
    units = torch.nonzero(fires).flatten()
    summary: dict[str, Any] = {"n": n, "units": int(acts.shape[1]), "firing_units": len(units)}
    if not len(units):
        return {**summary, "mean_iou": None, "median_iou": None, "full_units": 0,
                "mean_iou_full": None}  # fmt: skip
    _, ious = search_formulas(top_n_masks(acts[:, units], n), concepts, explainer)
    ious = ious.clamp(min=0.0).double()
    full = active_images[units] >= n
    return {
        **summary,
        "mean_iou": float(ious.mean()),
        "median_iou": float(ious.median()),
        "full_units": int(full.sum()),
        "mean_iou_full": float(ious[full].mean()) if bool(full.any()) else None,
    }


def compare_top_n(
    neurons: torch.Tensor,
    features: torch.Tensor,
    concepts: ConceptMatrix,
    explainer: OfflineExplainerConfig,
    sizes: Sequence[int],
    *,
    generator: torch.Generator | None = None,
) -> list[dict[str, Any]]:
    """`top_n_summary` of neurons and features for each mask size; with a `generator`, each
    summary also has `chance_mean_iou`: the same on images shuffled by one permutation for both
    kinds (the masks keep their size n, so chance is about the same for both kinds)."""
    if neurons.shape[0] != features.shape[0]:
        raise ValueError(
            f"neurons cover {neurons.shape[0]} images and features {features.shape[0]}; "
            "both must be measured on the same images"
        )
    order = None if generator is None else torch.randperm(neurons.shape[0], generator=generator)
    out = []
    for n in sizes:
        row: dict[str, Any] = {"n": n}
        for kind, matrix in (("neurons", neurons), ("features", features)):
            row[kind] = top_n_summary(matrix, concepts, explainer, n)
            if order is not None:
                chance = top_n_summary(matrix[order], concepts, explainer, n)
                row[kind]["chance_mean_iou"] = chance["mean_iou"]
        out.append(row)
    return out


def target_checks(
    train: dict[str, Any],
    heldout: dict[str, Any],
    iou: dict[str, Any],
    top_n: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Each of issue 6's targets: True, False, or None when it could not be measured (dead
    fraction before a whole dead-latent window of training tokens). `all_met` reads the
    quantile-mask IoU comparison only; each same-size comparison in `top_n` is reported beside
    it as `features_top<n>_mean_iou_gt_neurons`, not folded into `all_met`."""
    dead = train.get("dead_fraction")
    neurons, features = iou["neurons"]["mean_iou"], iou["features"]["mean_iou"]
    checks: dict[str, Any] = {
        "heldout_fvu_le_0.10": heldout["fvu"] <= TARGETS["fvu"],
        "heldout_l0_le_32": heldout["l0"] <= TARGETS["l0"],
        "dead_fraction_le_0.10": None if dead is None else dead <= TARGETS["dead_fraction"],
        "features_mean_iou_gt_neurons": None
        if neurons is None or features is None
        else features > neurons,
    }
    checks["all_met"] = all(v is True for v in checks.values())
    for row in top_n:
        a, b = row["neurons"]["mean_iou"], row["features"]["mean_iou"]
        checks[f"features_top{row['n']}_mean_iou_gt_neurons"] = (
            None if a is None or b is None else b > a
        )
    return checks
