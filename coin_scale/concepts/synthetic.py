"""Synthetic units with ground truth: units defined by formulas over a probe set's concepts.

A synthetic unit fires on the probe images its formula covers: its activation is the formula's
0/1 indicator plus Gaussian noise. Four kinds of formula, after the root operator:

- `mono`: one concept, `color=red`;
- `or`: `shape=circle OR shape=star` (values of one attribute, or of two);
- `and`: `size=large AND light=dim` (two attributes);
- `and_not`: `shape=star AND NOT color=red`.

Units come from a spec file (`load_spec`, YAML) or from `random_units` (a reproducible mix of
kinds for a seed). In this increment their activations come straight from the probe set's
ground-truth concepts (`synthetic_activations`); running them through the Ray dissection as a
model, and scoring LLM explainers on them, are later increments of issue 8.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

import torch

from coin_scale.concepts.formula import OPERATORS, Formula, Leaf, evaluate, parse_text, to_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.errors import close_matches

log = logging.getLogger(__name__)

FormulaKind = Literal["mono", "or", "and", "and_not"]
FORMULA_KINDS: tuple[FormulaKind, ...] = get_args(FormulaKind)
"""Kinds of synthetic unit: `mono` (one concept) or the root operator of the formula."""

DEFAULT_MIX: Mapping[FormulaKind, float] = MappingProxyType({kind: 1.0 for kind in FORMULA_KINDS})
"""Relative weights of the kinds drawn by `random_units`: an even mix."""

DEFAULT_NOISE = 0.3
"""Standard deviation of the Gaussian noise added to a unit's 0/1 formula indicator."""

DEFAULT_COVERAGE = (0.6, 1.4)
"""Random formulas cover between these multiples of the explainer's mask share
(1 - quantile) of the probe images: the range in which the offline explainer can find them."""

SPEC_KEYS = ("formula", "name", "noise")
"""Keys of one unit in a spec file; only `formula` is required."""

_FINGERPRINT_SEED = 0x5EC
_FINGERPRINT_MAX = 2**31
"""Random integer weights per image; sums over <= 2**22 images stay exact in float64."""


@dataclass(frozen=True, kw_only=True)
class SyntheticUnit:
    """A unit whose ground truth is a formula over the probe's concepts."""

    name: str
    """Unique name, e.g. `mono-003` (random units) or the spec's `name`."""
    formula: str
    """The true formula in machine form (`to_text`), e.g. `(color=red AND texture=stripes)`."""
    kind: FormulaKind
    """`mono`, `or`, `and` or `and_not`: the formula's root operator."""
    noise: float
    """Standard deviation of the Gaussian noise added to the 0/1 formula indicator."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: expected a non-empty unit name; got ''. Fix: name the unit.")
        if self.kind not in FORMULA_KINDS:
            raise ValueError(
                f"kind: expected one of {', '.join(FORMULA_KINDS)}; got {self.kind!r}. "
                "Fix: use one of them."
            )
        if not self.noise >= 0.0:
            raise ValueError(f"noise: expected >= 0; got {self.noise}. Fix: e.g. {DEFAULT_NOISE}.")


def kind_of(formula: Formula) -> FormulaKind:
    """`mono` for one concept, else the name of the root operator."""
    if isinstance(formula, Leaf):
        return "mono"
    kind: FormulaKind = formula.operator  # type: ignore[assignment]
    return kind


def concept_names_in(text: str) -> list[str]:
    """The words of a formula text that are not operators or parentheses (for error messages)."""
    keywords = {word for op in OPERATORS.values() for word in op.keyword.split()}
    return [w for w in re.findall(r"[^\s()]+", text) if w not in keywords]


def parse_formula(text: str, names: Sequence[str]) -> Formula:
    """A formula from `to_text` form, or one binary operator without the outer parentheses
    (`color=red AND NOT shape=star`). ValueError naming the unknown concepts or the syntax error."""
    text = " ".join(text.split())
    try:
        return parse_text(text, names)
    except ValueError as err:
        first = err
    if not text.startswith("("):
        try:
            return parse_text(f"({text})", names)
        except ValueError:
            pass
    unknown = [word for word in concept_names_in(text) if word not in names]
    if not unknown:
        raise first
    hints = []
    for word in dict.fromkeys(unknown):
        near = close_matches(word, list(names), n=3)
        hints.append(f"{word!r} (did you mean {near}?)" if near else repr(word))
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    raise ValueError(
        f"unknown concept {'; '.join(hints)} in formula {text!r}; expected "
        f"`<attribute>=<value>` concepts of the probe set ({len(names)}: {shown}). "
        "Fix: use a concept the probe set shows (and hides from at least one image)."
    )


def parse_spec(
    data: object, concepts: ConceptMatrix, *, default_noise: float = DEFAULT_NOISE, source: str
) -> tuple[SyntheticUnit, ...]:
    """Units of a parsed spec file: a list of mappings with `formula` and optional `name`,
    `noise`. ValueError naming `source`, the unit and what is wrong."""
    if not isinstance(data, list) or not data:
        raise ValueError(
            f"{source}: expected a non-empty list of units (`- formula: color=red`); got "
            f"{type(data).__name__ if data else 'nothing'}. Fix: see `coin-scale eval synthetic -h`."
        )
    units: list[SyntheticUnit] = []
    for index, item in enumerate(data):
        where = f"{source}: unit {index}"
        if not isinstance(item, dict):
            raise ValueError(
                f"{where}: expected a mapping with {', '.join(SPEC_KEYS)}; got "
                f"{type(item).__name__} {item!r}. Fix: write `- formula: color=red`."
            )
        name = item.get("name", f"unit-{index:03d}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name: expected a non-empty string; got {name!r}.")
        where = f"{where} ({name!r})"
        extra = sorted(str(key) for key in item if key not in SPEC_KEYS)
        if extra:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(extra)}; valid: {', '.join(SPEC_KEYS)}."
            )
        text = item.get("formula")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{where}: formula: expected a formula text such as `color=red AND NOT "
                f"shape=star`; got {text!r}."
            )
        noise = item.get("noise", default_noise)
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
            raise ValueError(f"{where}: noise: expected a number >= 0; got {noise!r}.")
        try:
            formula = parse_formula(text, concepts.names)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if not bool(evaluate(formula, concepts.matrix).any()):
            raise ValueError(
                f"{where}: formula {text!r} covers none of the {concepts.n_images} probe images, "
                "so the unit never fires. Fix: choose concepts that co-occur on the probe set."
            )
        units.append(
            SyntheticUnit(
                name=name,
                formula=to_text(formula, concepts.names),
                kind=kind_of(formula),
                noise=float(noise),
            )
        )
    seen: set[str] = set()
    for unit in units:
        if unit.name in seen:
            raise ValueError(f"{source}: name {unit.name!r} is used by two units. Fix: rename one.")
        seen.add(unit.name)
    return tuple(units)


def load_spec(
    path: str | Path, concepts: ConceptMatrix, *, default_noise: float = DEFAULT_NOISE
) -> tuple[SyntheticUnit, ...]:
    """The units of a YAML spec file (see `parse_spec`); ValueError for a missing or bad file."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"spec file {file} does not exist. Fix: pass the path of a YAML file.")
    try:
        data = yaml.safe_load(file.read_text("utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(
            f"spec file {file} is not valid YAML: {str(err).splitlines()[0]}"
        ) from None
    return parse_spec(data, concepts, default_noise=default_noise, source=str(file))


# --- Random units ------------------------------------------------------------------------------


def _kind_counts(n: int, mix: Mapping[FormulaKind, float]) -> dict[FormulaKind, int]:
    """n split over the kinds in proportion to `mix` (largest remainders; ties in kind order)."""
    bad = [kind for kind in mix if kind not in FORMULA_KINDS]
    if bad or not mix or any(not w >= 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(
            f"mix: expected weights >= 0, not all zero, for kinds among "
            f"{', '.join(FORMULA_KINDS)}; got {dict(mix)}. Fix: e.g. {{'mono': 1, 'or': 1}}."
        )
    total = sum(mix.values())
    exact = {kind: n * mix[kind] / total for kind in FORMULA_KINDS if kind in mix}
    counts = {kind: int(share) for kind, share in exact.items()}
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), FORMULA_KINDS.index(k)))
    for kind in order[: n - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _candidates(kind: FormulaKind, concepts: ConceptMatrix) -> tuple[torch.Tensor, torch.Tensor]:
    """Every formula of `kind` with at most two concepts: (int64 (candidate, 2) concept pairs
    (left, right; right = left for mono), int64 (candidate,) images covered), excluding formulas
    that cover exactly the images of one concept (an AND of nested concepts, an AND NOT of
    disjoint ones: a mono unit in disguise)."""
    matrix = concepts.matrix.double()
    generator = torch.Generator().manual_seed(_FINGERPRINT_SEED)
    weights = torch.randint(1, _FINGERPRINT_MAX, (concepts.n_images,), generator=generator).double()
    count = matrix.sum(1)
    fp = matrix @ weights
    index = torch.arange(concepts.n_concepts)
    if kind == "mono":
        return torch.stack([index, index], dim=1), count.long()
    both = matrix @ matrix.T
    fp_both = (matrix * weights) @ matrix.T
    op = OPERATORS[kind]
    covered = op.measure(count[:, None], count[None, :], both)
    fingerprint = op.measure(fp[:, None], fp[None, :], fp_both)
    left, right = torch.meshgrid(index, index, indexing="ij")
    keep = left != right
    if kind != "and_not":  # commutative: each unordered pair once
        keep &= left < right
    keep &= ~torch.isin(fingerprint, fp)
    pairs = torch.stack([left[keep], right[keep]], dim=1)
    return pairs, covered[keep].long()


def _formula_of(kind: FormulaKind, pair: list[int]) -> Formula:
    if kind == "mono":
        return Leaf(pair[0])
    return OPERATORS[kind].node(Leaf(pair[0]), Leaf(pair[1]))


def random_units(
    n: int,
    seed: int,
    concepts: ConceptMatrix,
    *,
    mix: Mapping[FormulaKind, float] = DEFAULT_MIX,
    quantile: float = 0.85,
    coverage: tuple[float, float] = DEFAULT_COVERAGE,
    noise: float = DEFAULT_NOISE,
) -> tuple[SyntheticUnit, ...]:
    """n units with random formulas of one or two concepts, the same for the same arguments.

    The kinds split n in proportion to `mix`; each kind draws distinct formulas (repeating only
    when it has fewer than it needs) among those covering between `coverage` multiples of
    (1 - `quantile`) of the probe images, so that a unit's mask at the explainer's `quantile`
    is mostly its formula's images. ValueError when a kind has no such formula on this probe."""
    if n < 1:
        raise ValueError(f"n: expected >= 1 units; got {n}. Fix: e.g. 100.")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile: expected in (0, 1); got {quantile}. Fix: e.g. 0.85.")
    if not 0.0 <= coverage[0] <= coverage[1]:
        raise ValueError(
            f"coverage: expected 0 <= low <= high; got {coverage}. Fix: e.g. (0.6, 1.4)."
        )
    share = (1.0 - quantile) * concepts.n_images
    low, high = coverage[0] * share, coverage[1] * share
    generator = torch.Generator().manual_seed(seed)
    units: list[SyntheticUnit] = []
    for kind, count in _kind_counts(n, mix).items():
        if count == 0:
            continue
        pairs, covered = _candidates(kind, concepts)
        fits = (covered >= max(low, 1.0)) & (covered <= high)
        pool = pairs[fits]
        if len(pool) == 0:
            raise ValueError(
                f"random units: expected formulas of kind {kind!r} covering {low:.0f}-{high:.0f} "
                f"of the {concepts.n_images} probe images ({coverage[0]:g}-{coverage[1]:g} x "
                f"the explainer's {1 - quantile:.0%} mask); got none among the "
                f"{len(pairs)} of that kind. Fix: leave {kind!r} out of the mix, or use a larger "
                "or richer probe set."
            )
        if len(pool) < count:
            log.info("kind %s: %d formulas fit, %d units: some repeat", kind, len(pool), count)
        order = torch.cat(
            [torch.randperm(len(pool), generator=generator) for _ in range(-(-count // len(pool)))]
        )
        for pick in order[:count].tolist():
            formula = _formula_of(kind, pool[pick].tolist())
            units.append(
                SyntheticUnit(
                    name=f"{kind}-{len(units):03d}",
                    formula=to_text(formula, concepts.names),
                    kind=kind,
                    noise=noise,
                )
            )
    return tuple(units)


def synthetic_activations(
    units: Sequence[SyntheticUnit], concepts: ConceptMatrix, seed: int
) -> torch.Tensor:
    """float32 (image, unit): each unit's formula indicator on the probe images plus its noise
    times a standard normal draw; the same for the same seed."""
    if not units:
        raise ValueError("units: expected at least one synthetic unit; got none.")
    signal = torch.stack(
        [evaluate(parse_text(unit.formula, concepts.names), concepts.matrix) for unit in units],
        dim=1,
    ).float()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(signal.shape, generator=generator)
    scale = torch.tensor([unit.noise for unit in units], dtype=torch.float32)
    return (signal + noise * scale[None, :]).contiguous()
