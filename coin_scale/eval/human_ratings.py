"""Human ratings of a sweep's explanations: the H (human alignment) part of InterpScore.

A ratings CSV has one row per human judgment: `layer`, `unit` and `soft_correct` (1 when the
person agreed that the unit's explanation describes its images, 0 when not, or a fraction), the
column name InterpScore's trials CSV uses. A unit's H is the mean of its judgments; units without
ratings keep H null. Unlike the trials CSV of `coin-scale interpscore`, these judgments are of
the explanation as shown in the report, not of single images, so no activation threshold applies.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from coin_scale.eval.explanation_scores import NO_HUMANS, UnitScores
from coin_scale.eval.interpscore import InterpWeights, interp_score

COLUMNS = ("layer", "unit", "soft_correct")


@dataclass(frozen=True)
class UnitRating:
    """A unit's human alignment: the mean of its judgments and how many there were."""

    H: float
    n: int


def load_human_ratings(path: str | Path) -> dict[tuple[str, int], UnitRating]:
    """(layer, unit) -> its rating; a ValueError naming the file, row and column on bad input."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(
                    f"{path}: missing column(s) {', '.join(missing)}; a ratings CSV has columns "
                    f"{', '.join(COLUMNS)} (one row per human judgment)"
                )
            sums: dict[tuple[str, int], list[float]] = {}
            for line, row in enumerate(reader, start=2):
                key, value = _parse_row(path, line, row)
                sums.setdefault(key, []).append(value)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the ratings CSV ({err})") from None
    if not sums:
        raise ValueError(f"{path}: no ratings (expected rows of {', '.join(COLUMNS)})")
    return {key: UnitRating(H=sum(v) / len(v), n=len(v)) for key, v in sums.items()}


def _parse_row(path: Path, line: int, row: Mapping[str, str]) -> tuple[tuple[str, int], float]:
    layer = (row.get("layer") or "").strip()
    try:
        unit = int((row.get("unit") or "").strip())
        value = float((row.get("soft_correct") or "").strip())
    except ValueError:
        raise ValueError(
            f"{path} line {line}: unit must be an integer and soft_correct a number; got "
            f"unit={row.get('unit')!r}, soft_correct={row.get('soft_correct')!r}"
        ) from None
    if not layer or unit < 0 or not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(
            f"{path} line {line}: expected a layer name, a unit >= 0 and soft_correct in [0, 1]; "
            f"got layer={layer!r}, unit={unit}, soft_correct={value}"
        )
    return (layer, unit), value


def with_human_alignment(
    scores: Sequence[UnitScores],
    ratings: Mapping[tuple[str, int], UnitRating],
    weights: InterpWeights | None = None,
) -> list[UnitScores]:
    """`scores` with H set (and the aggregate recomputed over S, C, R and H) for every rated
    unit; the others unchanged."""
    weights = weights or InterpWeights()
    out = []
    for s in scores:
        rating = ratings.get((s.layer, s.unit))
        if rating is None or s.interp is None:
            out.append(s)
            continue
        i = s.interp
        notes = tuple(n for n in i.notes if n != NO_HUMANS) + (
            f"H from {rating.n} human rating{'s' if rating.n != 1 else ''}",
        )
        interp = interp_score(S=i.S, C=i.C, R=i.R, H=rating.H, weights=weights, notes=notes)
        out.append(replace(s, interp=interp))
    return out
