"""Small frozen identifiers shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UnitKind = Literal["neuron", "sae", "synthetic"]
"""What a unit is: a channel of a layer (`neuron`), a latent of an SAE trained on the layer
(`sae`) or a ground-truth unit of a synthetic model (`synthetic`)."""
UNIT_KINDS: tuple[UnitKind, ...] = ("neuron", "sae", "synthetic")

LayerUnitKind = Literal["neuron", "sae"]
"""The unit kinds a user chooses for a layer (`--units`); `synthetic` follows from the model."""
LAYER_UNIT_KINDS: tuple[LayerUnitKind, ...] = ("neuron", "sae")


@dataclass(frozen=True, slots=True)
class UnitId:
    """One unit: a channel of a layer (`neuron`), an SAE feature of it (`sae`) or a ground-truth unit."""

    model: str
    layer: str
    kind: UnitKind
    index: int

    def __str__(self) -> str:
        return f"{self.model}/{self.layer}/{self.kind}#{self.index}"


def parse_unit_list(text: str) -> tuple[int, ...]:
    """'0-3,7' -> (0, 1, 2, 3, 7): indices and inclusive ranges, in the order given, each once;
    `ValueError` naming the part that is not one."""
    units: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(f"{part!r} is not a unit index or a range like 0-31") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"{part!r} is not a unit index or a range like 0-31")
        units.extend(range(lo, hi + 1))
    return tuple(dict.fromkeys(units))


@dataclass(frozen=True, slots=True)
class UnitSelection:
    """Units chosen by hand, layer by layer (`--select layer4=12,45;layer3=7`)."""

    layers: tuple[tuple[str, tuple[int, ...]], ...]
    """(layer, its units), in the order given."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.layers)

    def units_of(self, layer: str) -> tuple[int, ...] | None:
        """The units chosen in `layer`, or None when it is not named."""
        return dict(self.layers).get(layer)

    def check(self, n_units: dict[str, int]) -> None:
        """`ValueError` unless every layer named is one of `n_units`' and every unit is below its
        count there."""
        for name, units in self.layers:
            if name not in n_units:
                raise ValueError(
                    f"layer {name!r} is not among the layers explained here: {', '.join(n_units)}"
                )
            out = [u for u in units if u >= n_units[name]]
            if out:
                raise ValueError(
                    f"unit {out[0]} of {name} is out of range: it has {n_units[name]} units "
                    f"(0-{n_units[name] - 1})"
                )

    def __str__(self) -> str:
        return ";".join(f"{name}={','.join(map(str, units))}" for name, units in self.layers)


def parse_selection(text: str) -> UnitSelection:
    """`layer4=12,45;layer3=7-9`, or `@FILE` whose lines are `layer=units` (blank lines and
    `#` comments skipped); a layer named twice gets the units of both. `ValueError` saying what
    is wrong."""
    source = text.strip()
    if source.startswith("@"):
        from pathlib import Path

        path = Path(source[1:])
        if not path.is_file():
            raise ValueError(f"the selection file {path} does not exist")
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        entries = [line for line in lines if line]
        where = f"{path}: "
    else:
        entries = [e.strip() for e in source.split(";") if e.strip()]
        where = ""
    chosen: dict[str, list[int]] = {}
    for entry in entries:
        layer, eq, units = (part.strip() for part in entry.partition("="))
        if not layer or not eq or not units:
            raise ValueError(f"{where}{entry!r}: expected LAYER=UNITS, e.g. layer4=12,45 or layer3=0-7")
        try:
            chosen.setdefault(layer, []).extend(parse_unit_list(units))
        except ValueError as err:
            raise ValueError(f"{where}{entry!r}: {err}") from None
    if not chosen:
        raise ValueError(f"{where or repr(text) + ': '}no units chosen; expected LAYER=UNITS[;LAYER=UNITS]")
    return UnitSelection(tuple((name, tuple(dict.fromkeys(us))) for name, us in chosen.items()))
