"""InterpScore from a trials CSV and a unit -> concept JSON, in the InterpScore framework's formats.

The CSV has one row per trial (an image shown to a person): `trial_category`, `ground_truth` (the
image's concept), `level` (perturbation level; `clean_level` is the unperturbed one),
`activation_<id>` per unit, and the human's answer (`soft_correct`, true/false). The JSON maps a
unit id to its concept name.

R follows the framework's `InterpScore/robustness.py` (ernestoBocini/Interpretability-Score):
the recognised perturbed images of the concept fall into groups, by default the benign levels 1
and 2 pooled and the adversarial level 3, with level 4 (DeepDream) left out; each group scores
min(r, 1/r) of r = mean |activation| over the mean |activation| on the clean images, and R is the
mean over the groups that have images. `robust_groups` sets other groups (each level on its own
was coin-scale's earlier definition).

Two modes (`compat`):
- 'coin-scale' (default): a CSV holds no model or images, so C (causality) cannot be measured
  and is reported as missing, never invented; the aggregate is the `weights`-weighted mean of the
  measured parts, renormalised over them (the 'parts' column says which); a part that cannot be
  measured (no recognised perturbed image, no human column) is missing, not 0.
- 'reference': the framework's script as it runs: C = 0 (its causality finds no images), R and H
  0 when they cannot be measured, the aggregate the plain mean of S, C, R and H (its script
  parses `--weights` but never passes them to the aggregate), R's clean level 5 as in its
  `robustness.py`; the results CSV has its columns (`REFERENCE_COLUMNS`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coin_scale.errors import UserError
from coin_scale.eval.detection import Detection, detection
from coin_scale.eval.interpscore import (
    PARTS,
    InterpScore,
    InterpWeights,
    human_alignment,
    interp_score,
    robustness,
    selectivity,
)

REQUIRED_COLUMNS = ("trial_category", "ground_truth", "level")
REFERENCE_GROUPS: tuple[tuple[int, ...], ...] = ((1, 2), (3,))
"""R's groups of perturbation levels in the framework's robustness.py: benign levels 1-2 pooled,
adversarial level 3; level 4 (DeepDream) excluded."""
REFERENCE_R_CLEAN_LEVEL = 5
"""The clean level of the framework's robustness.py (fixed there, whatever --clean-level says)."""
REFERENCE_RECOGNIZABLE_LEVELS = (3, 4, 5)
"""The framework script's --recognizable-levels default; its robustness.py takes no such argument,
so no score depends on it (recorded in the run's config only)."""
TRUE_WORDS = {"true", "1", "1.0", "yes", "t", "y"}
FALSE_WORDS = {"false", "0", "0.0", "no", "f", "n"}
NO_CAUSALITY = "C not measured: a trials CSV holds no model or images to ablate"
REFERENCE_CAUSALITY = "C = 0, as the framework's script gives it: a trials CSV holds no images to ablate"


@dataclass(frozen=True)
class InterpBatchConfig:
    """Settings of a CSV run; defaults are the InterpScore framework's."""

    clean_level: int = 5
    threshold_percentile: float = 0.95
    """Quantile of the unit's clean non-concept activations above which it 'fires' (for H)."""
    weights: InterpWeights = field(default_factory=InterpWeights)
    """The aggregate's weights in 'coin-scale' mode (the 'reference' mode takes the plain mean)."""
    robust_groups: tuple[tuple[int, ...], ...] | None = REFERENCE_GROUPS
    """R's groups of perturbation levels (each group's images pooled); None = every level but the
    clean one, each on its own."""
    human_column: str = "soft_correct"
    trial_category: str | None = "experiment"
    """Keep only trials of this category; None keeps all."""
    compat: str = "coin-scale"
    """'coin-scale' or 'reference' (the framework's script's numbers and columns; see the module)."""
    recognizable_levels: tuple[int, ...] = REFERENCE_RECOGNIZABLE_LEVELS
    min_p_value: float = 0.05
    """The framework script's --min-p-value; its human-alignment function takes no p-value, so no
    score depends on it (recorded in the run's config only)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold_percentile < 1.0:
            raise UserError(
                f"--threshold-percentile must be in (0, 1), got {self.threshold_percentile}"
            )
        if self.compat not in ("coin-scale", "reference"):
            raise UserError(f"--compat must be coin-scale or reference, got {self.compat!r}")
        if not 0.0 < self.min_p_value <= 1.0:
            raise UserError(f"--min-p-value must be in (0, 1], got {self.min_p_value}")

    @property
    def reference(self) -> bool:
        return self.compat == "reference"


def parse_robust_groups(text: str) -> tuple[tuple[int, ...], ...] | None:
    """'1,2;3' -> ((1, 2), (3,)): groups split by ';', levels by ',' or spaces; 'per-level' ->
    None (every non-clean level on its own). A level in two groups or a non-integer is an error."""
    if text.strip().lower() == "per-level":
        return None
    groups: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for piece in text.split(";"):
        words = piece.replace(",", " ").split()
        if not words:
            raise UserError(f"--robust-groups: an empty group in {text!r} (e.g. '1,2;3')")
        try:
            levels = tuple(int(w) for w in words)
        except ValueError:
            raise UserError(
                f"--robust-groups: levels must be integers, got {piece.strip()!r} (e.g. '1,2;3')"
            ) from None
        twice = seen & set(levels)
        if twice:
            raise UserError(f"--robust-groups: level {min(twice)} is in two groups")
        seen |= set(levels)
        groups.append(levels)
    return tuple(groups)


def groups_text(groups: tuple[tuple[int, ...], ...] | None) -> str:
    """'1,2;3' (or 'per-level')."""
    if groups is None:
        return "per-level"
    return ";".join(",".join(str(lv) for lv in g) for g in groups)


@dataclass(frozen=True)
class Trials:
    """The CSV's columns as arrays (activations float with NaN where empty)."""

    path: str
    ground_truth: np.ndarray
    level: np.ndarray
    human: np.ndarray | None
    activations: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.level.size)


@dataclass(frozen=True)
class UnitResult:
    """One unit's InterpScore plus its detector metrics on the clean images."""

    unit: str
    concept: str
    interp: InterpScore
    threshold: float
    clean_detection: Detection
    n_clean_concept: int
    n_clean_other: int
    n_high: int
    """Concept images above the threshold (H rests on these)."""


def load_unit_map(path: str | Path) -> dict[str, str]:
    """{unit id: concept} from a JSON object; a one-line error for anything else."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"unit map {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"unit map {p} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"unit map {p} must be a JSON object from unit id to concept name")
    out: dict[str, str] = {}
    for key, value in data.items():
        if not str(key).strip().isdigit():
            raise UserError(
                f"unit map {p}: unit ids must be integers (activation_<id>), got {key!r}"
            )
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"unit map {p}: unit {key} must map to a concept name, got {value!r}")
        out[str(key).strip()] = value.strip()
    return out


def load_trials(path: str | Path, config: InterpBatchConfig) -> Trials:
    """Read and check the trials CSV (the required columns, numeric levels and activations)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"trials CSV {p} does not exist")
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"trials CSV {p} cannot be read as CSV: {err}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(
            f"trials CSV {p} lacks column(s) {', '.join(missing)}; it has {', '.join(columns[:12])}"
        )
    act_columns = [c for c in columns if c.startswith("activation_")]
    if not act_columns:
        raise UserError(f"trials CSV {p} has no activation_<unit id> column")
    if config.trial_category is not None:
        rows = [r for r in rows if (r["trial_category"] or "").strip() == config.trial_category]
    if not rows:
        raise UserError(f"trials CSV {p} has no rows with trial_category {config.trial_category!r}")
    levels = np.array([_number(r["level"], "level", i, p) for i, r in enumerate(rows)])
    truth = np.array([(r["ground_truth"] or "").strip().lower() for r in rows])
    human = None
    if config.human_column in columns:
        human = np.array(
            [_truth(r[config.human_column], config.human_column, i, p) for i, r in enumerate(rows)]
        )
    activations = {
        c[len("activation_") :]: np.array(
            [_number(r[c], c, i, p, empty=math.nan) for i, r in enumerate(rows)]
        )
        for c in act_columns
    }
    return Trials(
        path=str(p), ground_truth=truth, level=levels, human=human, activations=activations
    )


def score_units(
    trials: Trials, unit_map: dict[str, str], config: InterpBatchConfig
) -> tuple[list[UnitResult], list[str]]:
    """Each mapped unit's result, and a warning per unit that could not be scored."""
    results: list[UnitResult] = []
    warnings: list[str] = []
    for unit, concept in unit_map.items():
        acts = trials.activations.get(unit)
        if acts is None:
            warnings.append(f"unit {unit} ({concept}): no activation_{unit} column; skipped")
            continue
        result = _score_unit(trials, unit, concept, acts, config)
        if isinstance(result, str):
            warnings.append(f"unit {unit} ({concept}): {result}; skipped")
        else:
            results.append(result)
    if not results:
        raise UserError("no unit of the map could be scored: " + "; ".join(warnings))
    results.sort(key=lambda r: -(r.interp.score if r.interp.score is not None else -math.inf))
    return results, warnings


def _score_unit(
    trials: Trials, unit: str, concept: str, acts: np.ndarray, config: InterpBatchConfig
) -> UnitResult | str:
    valid = ~np.isnan(acts)
    is_concept = trials.ground_truth == concept.lower()
    clean = (trials.level == config.clean_level) & valid
    target, other = acts[clean & is_concept], acts[clean & ~is_concept]
    if target.size == 0 or other.size == 0:
        return f"no clean (level {config.clean_level}) images of {'the concept' if target.size == 0 else 'other concepts'}"
    threshold = float(np.quantile(other, config.threshold_percentile))
    notes = [REFERENCE_CAUSALITY if config.reference else NO_CAUSALITY]

    recognised = trials.human == 1.0 if trials.human is not None else np.ones(len(trials), bool)
    clean_level = REFERENCE_R_CLEAN_LEVEL if config.reference else config.clean_level
    groups = config.robust_groups
    if groups is None:
        groups = tuple((int(v),) for v in sorted({int(v) for v in trials.level}) if v != clean_level)
    r_clean = acts[(trials.level == clean_level) & is_concept & valid]
    perturbed = {
        g: acts[np.isin(trials.level, g) & is_concept & valid & recognised] for g in groups
    }
    R = robustness(r_clean, perturbed)
    if R is None:
        notes.append("R not measured: no recognised perturbed image of the concept")

    H: float | None = None
    n_high = 0
    if trials.human is None:
        notes.append(f"H not measured: no {config.human_column} column")
    else:
        mask = is_concept & valid
        H, n_high = human_alignment(acts[mask], trials.human[mask], threshold)
        if n_high == 0:
            notes.append("H = 0: no concept image fires the unit above the threshold")

    if config.reference:  # the framework's script: unmeasurable parts are 0, the plain mean
        parts = {"S": selectivity(target, other), "C": 0.0, "R": R or 0.0, "H": H or 0.0}
        interp = InterpScore(
            **parts, score=sum(parts.values()) / 4, parts=PARTS, notes=tuple(notes)
        )
    else:
        interp = interp_score(
            S=selectivity(target, other), C=None, R=R, H=H, weights=config.weights, notes=notes
        )
    labels = is_concept[clean]
    return UnitResult(
        unit=unit,
        concept=concept,
        interp=interp,
        threshold=threshold,
        clean_detection=detection(acts[clean], labels, threshold),
        n_clean_concept=int(target.size),
        n_clean_other=int(other.size),
        n_high=n_high,
    )


RESULT_COLUMNS = (
    "unit",
    "concept",
    "S",
    "C",
    "R",
    "H",
    "InterpScore",
    "parts",
    "threshold",
    "f1",
    "iou",
    "auprc",
    "n_clean_concept",
    "n_clean_other",
    "n_high",
    "notes",
)


def result_rows(results: Sequence[UnitResult]) -> list[dict[str, object]]:
    """The results as flat rows (the CSV's columns)."""
    rows = []
    for r in results:
        i, d = r.interp, r.clean_detection
        rows.append(
            {
                "unit": r.unit,
                "concept": r.concept,
                "S": _fmt(i.S),
                "C": _fmt(i.C),
                "R": _fmt(i.R),
                "H": _fmt(i.H),
                "InterpScore": _fmt(i.score),
                "parts": "+".join(i.parts),
                "threshold": _fmt(r.threshold),
                "f1": _fmt(d.f1),
                "iou": _fmt(d.iou),
                "auprc": _fmt(d.auprc),
                "n_clean_concept": r.n_clean_concept,
                "n_clean_other": r.n_clean_other,
                "n_high": r.n_high,
                "notes": "; ".join(i.notes),
            }
        )
    return rows


REFERENCE_COLUMNS = ("Neuron", "Concept", "S", "C", "R", "H", "InterpScore", "Notes")
"""The columns of the framework script's results CSV (`--compat reference`)."""


def reference_rows(results: Sequence[UnitResult]) -> list[dict[str, object]]:
    """The results as the framework's script writes them: full-precision floats (Python's
    shortest round-trip form, as pandas writes float64), 'Threshold: x.xxxx' in Notes."""
    rows = []
    for r in results:
        i = r.interp
        rows.append({
            "Neuron": int(r.unit), "Concept": r.concept,
            **{k: repr(float(v or 0.0)) for k, v in (("S", i.S), ("C", i.C), ("R", i.R), ("H", i.H))},
            "InterpScore": repr(float(i.score or 0.0)), "Notes": f"Threshold: {r.threshold:.4f}",
        })  # fmt: skip
    return rows


def write_results(path: str | Path, results: Sequence[UnitResult], *, reference: bool = False) -> None:
    """Write the results CSV whole or not at all (a temporary file renamed into place); with
    `reference`, in the framework script's columns and number format."""
    p = Path(path)
    if not p.parent.is_dir():
        raise UserError(f"cannot write {p}: directory {p.parent} does not exist")
    tmp = p.with_name(f".{p.name}.tmp")
    columns, rows = (
        (REFERENCE_COLUMNS, reference_rows(results)) if reference
        else (RESULT_COLUMNS, result_rows(results))
    )  # fmt: skip
    try:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(p)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {p}: {err.strerror or err}") from None


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _number(
    text: str | None, column: str, row: int, path: Path, empty: float | None = None
) -> float:
    value = (text or "").strip()
    if not value and empty is not None:
        return empty
    try:
        return float(value)
    except ValueError:
        raise UserError(
            f"trials CSV {path}, data row {row + 1}: {column} must be a number, got {value!r}"
        ) from None


def _truth(text: str | None, column: str, row: int, path: Path) -> float:
    value = (text or "").strip().lower()
    if not value:
        return math.nan
    if value in TRUE_WORDS:
        return 1.0
    if value in FALSE_WORDS:
        return 0.0
    raise UserError(
        f"trials CSV {path}, data row {row + 1}: {column} must be true/false, got {value!r}"
    )
