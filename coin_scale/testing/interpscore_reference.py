"""The InterpScore framework's formulas (ernestoBocini/Interpretability-Score:
`interpretability_score.py`, `InterpScore/selectivity.py`, `robustness.py`, `human_alignment.py`,
`aggregated_measure.py`), written out from their published definitions independently of
coin-scale's `eval/interpscore*`, to check `coin-scale interpscore --compat reference` against
(`tests/test_interpscore_reference.py`, `scripts/interpscore_reference.py`). Testing only.

A trial is a dict: `gt` (ground truth, lower case), `level`, `human` (1.0/0.0, NaN unknown) and
one float activation per unit id (NaN where empty)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

EPS = 1e-8


def ref_selectivity(x: np.ndarray, y: np.ndarray) -> float:
    """Hedges' g between clean concept and clean other activations, Phi(g / sqrt 2)."""
    if x.size < 2 or y.size < 2:
        return 0.5
    sp = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    if sp <= 1e-12:
        return 0.5 if math.isclose(x.mean(), y.mean()) else float(x.mean() > y.mean())
    g = (x.mean() - y.mean()) / sp * (1.0 - 3.0 / (4.0 * (x.size + y.size) - 9.0))
    return 0.5 * (1.0 + math.erf(g / math.sqrt(2.0) / math.sqrt(2.0)))


def ref_robustness(rows: list[dict], concept: str, unit: str) -> float:
    """Levels 1-2 pooled and level 3, recognised images only, against clean level 5; level 4
    left out; exp(-|log r|) of the mean-|activation| ratio; the mean of the two; 0 without any."""

    def acts(pred) -> np.ndarray:  # noqa: ANN001
        values = [r[unit] for r in rows if r["gt"] == concept and pred(r)]
        return np.array([v for v in values if not math.isnan(v)])

    clean = acts(lambda r: r["level"] == 5)
    if clean.size == 0:
        return 0.0
    mu = float(np.mean(np.abs(clean)))
    parts = []
    for levels in ((1, 2), (3,)):
        group = acts(lambda r, lv=levels: r["level"] in lv and r["human"] == 1)
        if group.size:
            ratio = max((float(np.mean(np.abs(group))) + EPS) / (mu + EPS), EPS)
            parts.append(math.exp(-abs(math.log(ratio))))
    return float(np.mean(parts)) if parts else 0.0


def ref_scores(rows: list[dict], neuron_map: dict[str, str], q: float = 0.95) -> dict[str, dict]:
    """The framework script's per-neuron S, C, R, H and InterpScore (equal weights, C = 0)."""
    out = {}
    for unit, concept in neuron_map.items():
        concept = concept.lower()
        clean_c = [r[unit] for r in rows if r["gt"] == concept and r["level"] == 5]
        clean_o = [r[unit] for r in rows if r["gt"] != concept and r["level"] == 5]
        x = np.array([v for v in clean_c if not math.isnan(v)])
        y = np.array([v for v in clean_o if not math.isnan(v)])
        S = ref_selectivity(x, y)
        threshold = float(np.quantile(y, q))
        high = [r["human"] for r in rows if r["gt"] == concept and r[unit] > threshold]
        H = float(np.nanmean(high)) if high else 0.0
        R = ref_robustness(rows, concept, unit)
        C = 0.0
        out[unit] = {"S": S, "C": C, "R": R, "H": H, "InterpScore": (S + C + R + H) / 4,
                     "threshold": threshold}  # fmt: skip
    return out


def read_trials(path: str | Path) -> list[dict]:
    """The experiment trials of a framework CSV as dicts (see the module)."""
    rows = []
    with Path(path).open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["trial_category"] != "experiment":
                continue
            human = {"true": 1.0, "false": 0.0}.get(r.get("soft_correct", "").strip().lower(), math.nan)
            row: dict = {"gt": r["ground_truth"], "level": int(float(r["level"])), "human": human}
            for key, value in r.items():
                if key.startswith("activation_"):
                    row[key[len("activation_") :]] = float(value) if value.strip() else math.nan
            rows.append(row)
    return rows
