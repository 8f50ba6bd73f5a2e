"""Synthetic units as a model: formulas computed from pixels, dissectable like any layer.

`SyntheticModel` = attribute net (`coin_scale.training.attribute_net`: pixels -> one softmax per
attribute) -> `concepts` (batch, concept) probabilities -> `units` (batch, unit): each synthetic
unit's formula evaluated softly (`soft_evaluate`: a leaf is its concept's probability, AND the
product, OR the probabilistic sum a + b - ab, AND NOT a (1 - b)) plus its noise std times a
standard normal drawn from a hash of the image's pixels (`PixelNoise`: the same image always gets
the same draw, on any replica or device, and different images independent ones).

The `units` layer (layout `nc`) is what `coin-scale dissect --layer units` reads; the model's
output is the same tensor, its class names are the units' names. Checkpoints (arch
`synthetic_units`, `save_synthetic_model`) carry the units' formulas and noise in their
`arch_kwargs`, so `--model PATH` rebuilds them anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coin_scale.concepts.formula import And, AndNot, Formula, Leaf, Or
from coin_scale.concepts.synthetic import SyntheticUnit, parse_formula
from coin_scale.models.attribute_net import AttributeNet, Probabilities, concept_names
from coin_scale.models.zoo import SYNTHETIC_UNITS_ARCH, register

ARCH = SYNTHETIC_UNITS_ARCH
"""The zoo architecture of a synthetic-units model."""

LAYER = "units"
"""The layer whose channels are the synthetic units."""

_P = 2_147_483_647
"""2**31 - 1, a prime: hashes are integers modulo it, so products stay below 2**62."""
_MIX = ((1_103_515_245, 12_345), (1_664_525, 1_013_904_223), (2_147_483_629, 40_503))


def soft_evaluate(formula: Formula, probabilities: torch.Tensor) -> torch.Tensor:
    """float (batch, concept) probabilities -> (batch,) the formula's soft truth: a leaf is its
    concept's probability, AND a b, OR a + b - a b, AND NOT a (1 - b); exactly the 0/1
    `evaluate` of the formula when the probabilities are 0 or 1."""
    if isinstance(formula, Leaf):
        return probabilities[:, formula.index]
    a = soft_evaluate(formula.left, probabilities)
    b = soft_evaluate(formula.right, probabilities)
    if isinstance(formula, And):
        return a * b
    if isinstance(formula, Or):
        return a + b - a * b
    if isinstance(formula, AndNot):
        return a * (1.0 - b)
    raise TypeError(f"formula: expected Leaf, And, Or or AndNot; got {type(formula).__name__}")


def _mix(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, _P) -> pseudo-random int64 values in [0, _P) (rounds of a * x + b
    mod _P, with the high bits folded in between)."""
    for a, b in _MIX:
        x = (x * a + b) % _P
        x = (x ^ (x >> 13)) % _P
    return x


class PixelNoise(nn.Module):
    """Images -> float32 (batch, unit) standard normal draws that depend only on the pixels.

    The normalised input is turned back into its uint8 pixels (`mean`, `std` of the model's
    `Preprocess`), hashed per image into a key, and each (key, unit, seed) is hashed into two
    uniforms and a Box-Muller normal: the same image gives the same draws in every batch and
    replica; two images differing in one pixel give independent ones."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, n_units: int, seed: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.n_units = n_units
        self.seed = seed
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x.float() * (self.std * 255.0) + self.mean * 255.0).round().clamp(0, 255)
        flat = pixels.reshape(len(x), -1).long()
        position = torch.arange(flat.shape[1], device=x.device, dtype=torch.int64)
        weights = _mix(position + self.seed % _P)
        key = _mix((flat * weights).sum(dim=1) % _P)  # (batch,)
        unit = _mix(torch.arange(self.n_units, device=x.device, dtype=torch.int64) + 1)
        h = _mix((key[:, None] + unit[None, :]) % _P)
        u1 = (_mix(h).double() + 1.0) / (_P + 1.0)
        u2 = _mix((h + 1) % _P).double() / _P
        normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
        return normal.float()


class SoftFormulaUnits(nn.Module):
    """(batch, concept) probabilities [+ (batch, unit) standard normals] -> (batch, unit): each
    unit's `soft_evaluate` plus its noise std times its normal."""

    noise: torch.Tensor

    def __init__(self, formulas: Sequence[Formula], noise: Sequence[float]) -> None:
        super().__init__()
        if not formulas or len(formulas) != len(noise):
            raise ValueError(
                f"expected one noise std per formula, at least one; got {len(formulas)} formulas "
                f"and {len(noise)} noise values."
            )
        self.formulas = tuple(formulas)
        self.register_buffer(
            "noise", torch.tensor(list(noise), dtype=torch.float32), persistent=False
        )

    def forward(
        self, probabilities: torch.Tensor, normal: torch.Tensor | None = None
    ) -> torch.Tensor:
        signal = torch.stack([soft_evaluate(f, probabilities.float()) for f in self.formulas], 1)
        if normal is None:
            return signal
        return signal + normal * self.noise[None, :]


class SyntheticModel(nn.Module):
    """Pixels -> attribute net -> concept probabilities -> synthetic units (batch, unit).

    Layers: `attributes.*` (the attribute net), `concepts` (batch, concept), `noise`
    (batch, unit) standard normals, `units` (batch, unit): the synthetic units."""

    def __init__(
        self,
        *,
        heads: Sequence[Sequence[Any]],
        units: Sequence[dict[str, Any]],
        width: int = 128,
        noise_seed: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        names = concept_names(heads)
        formulas = []
        for index, unit in enumerate(units):
            try:
                formulas.append(parse_formula(str(unit["formula"]), names))
            except ValueError as err:
                raise ValueError(
                    f"synthetic unit {index} ({unit.get('name')!r}): {err} The attribute net "
                    f"predicts {', '.join(a for a, _ in heads)} only."
                ) from None
        self.concept_names = names
        self.unit_names = tuple(str(unit["name"]) for unit in units)
        noise = [float(unit.get("noise", 0.0)) for unit in units]
        self.attributes = AttributeNet(heads=heads, width=width)
        self.concepts = Probabilities(self.attributes.group_sizes)
        self.noise = PixelNoise(len(units), noise_seed, mean, std) if any(noise) else None
        self.units = SoftFormulaUnits(formulas, noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = self.concepts(self.attributes(x))
        normal = self.noise(x) if self.noise is not None else None
        out: torch.Tensor = self.units(probabilities, normal)
        return out


def unit_kwargs(units: Sequence[SyntheticUnit]) -> list[dict[str, Any]]:
    """The `units` argument of `SyntheticModel` (plain dicts, for a checkpoint's arch_kwargs)."""
    return [{"name": u.name, "formula": u.formula, "noise": u.noise} for u in units]


def build_synthetic_model(
    units: Sequence[SyntheticUnit], attribute_net: str | Path, *, noise_seed: int = 0
) -> tuple[SyntheticModel, dict[str, Any], Any]:
    """(model with the attribute net's weights, its arch_kwargs, the net's Preprocess) for the
    units over an attribute-net checkpoint; ValueError when a formula names a concept the net
    does not predict."""
    from coin_scale.models.checkpoint import read_checkpoint
    from coin_scale.models.preprocess import Preprocess

    payload = read_checkpoint(Path(attribute_net))
    if payload.get("arch") != "attribute_net":
        raise ValueError(
            f"{attribute_net}: expected an attribute_net checkpoint; got arch {payload.get('arch')!r}."
        )
    raw = payload["preprocess"]
    pre = Preprocess(
        resize=raw["resize"], crop=raw["crop"], mean=tuple(raw["mean"]), std=tuple(raw["std"]),
        interpolation=raw["interpolation"],
    )  # fmt: skip
    kwargs = {
        "heads": payload["arch_kwargs"]["heads"], "width": payload["arch_kwargs"]["width"],
        "units": unit_kwargs(units), "noise_seed": noise_seed,
        "mean": list(pre.mean), "std": list(pre.std),
    }  # fmt: skip
    model = SyntheticModel(**kwargs)
    model.attributes.load_state_dict(payload["state_dict"])
    return model.eval(), kwargs, pre


def save_synthetic_model(
    path: str | Path,
    units: Sequence[SyntheticUnit],
    attribute_net: str | Path,
    *,
    noise_seed: int = 0,
) -> Path:
    """A coin-scale checkpoint (arch `synthetic_units`) of the units over the attribute net, that
    `coin-scale dissect --model PATH --layer units` dissects."""
    from coin_scale.models.checkpoint import save_checkpoint

    model, kwargs, pre = build_synthetic_model(units, attribute_net, noise_seed=noise_seed)
    return save_checkpoint(
        path, model, arch=ARCH, class_names=list(model.unit_names), preprocess=pre,
        arch_kwargs=kwargs, extra={"attribute_net": str(attribute_net)},
    )  # fmt: skip


@register(SYNTHETIC_UNITS_ARCH)
def synthetic_units(**kwargs: Any) -> nn.Module:
    """`SyntheticModel`: synthetic units with known formulas computed from pixels through the
    attribute net; its `units` layer is dissected like neurons."""
    return SyntheticModel(**kwargs)
