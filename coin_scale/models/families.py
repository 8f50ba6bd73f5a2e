"""The registry of model families: where `--model` values come from and how each family builds
its architectures on a replica.

Four families register themselves (`@register` at import of their module, done on first use):
- `timm` (`coin_scale.models.timm_models`): `--model timm:NAME`, architectures `timm:NAME`;
- `clip` (`coin_scale.models.clip_models`): `--model clip:ARCH`, an open_clip image encoder;
- `checkpoint` (`coin_scale.models.checkpoint`): `--model PATH` of a coin-scale checkpoint, whose
  own architectures are the zoo's (`coin_scale.models.zoo`);
- `torchvision` (`coin_scale.models.torchvision_models`): any other `--model`, a torchvision
  classification model name.

A prefixed family owns the `--model` values `NAME:...` and the architectures `NAME:...`; the
others are asked in registration order, a catch-all family last (torchvision: it takes every
other name and says when one is unknown). `resolve_model` and `build_module` (`coin_scale.models.loading`) dispatch
through here, so a new family is a module and a line in `BUILTIN_MODULES`, not another branch.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from coin_scale.errors import UserError
from coin_scale.models.payload import ModelPayload, ModelSource


@dataclass(frozen=True, kw_only=True)
class ModelFamily:
    """Where a family's models come from and how its architectures are built."""

    name: str
    """The family's name; for a prefixed family also the `--model` prefix (`timm` of
    `timm:NAME`), the architectures' namespace and the model ids' prefix (`timm-NAME`)."""
    usage: str
    """How `--model` names one of its models, for help and errors (`timm:NAME`)."""
    prefixed: bool
    """Whether its `--model` values and architectures are `name:...`."""
    resolve: Callable[[ModelSource], ModelPayload]
    """`--model`/`--weights` -> payload; bad input is a one-line UserError."""
    instantiate: Callable[[str, dict[str, Any]], nn.Module]
    """(architecture, arch_kwargs) -> a randomly initialised module (global RNG)."""
    claims: Callable[[str], bool] | None = None
    """Whether an unprefixed `--model` value is this family's (prefixed families: the prefix)."""
    builds: Callable[[str], bool] | None = None
    """Whether an unprefixed architecture is this family's (prefixed families: the prefix)."""
    catch_all: bool = False
    """Asked only after every other family (torchvision: it takes any other name and says when
    one is unknown)."""


FAMILIES: dict[str, ModelFamily] = {}
"""Families by name, in registration order; fill it with `register`, read it through
`families()`, which first imports the built-in ones."""

BUILTIN_MODULES = (
    "coin_scale.models.timm_models",
    "coin_scale.models.clip_models",
    "coin_scale.models.checkpoint",
    "coin_scale.models.torchvision_models",
)
"""Modules whose import registers the built-in families."""

_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):(.*)$")


def families() -> dict[str, ModelFamily]:
    """Every registered family by name, the built-in ones included."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return FAMILIES


def register(family: ModelFamily) -> ModelFamily:
    """Add a family to the registry (once per name)."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    if not family.prefixed and (family.claims is None or family.builds is None):
        raise ValueError(f"unprefixed model family {family.name!r} needs claims and builds")
    FAMILIES[family.name] = family
    return family


def split_name(value: str) -> tuple[str, str] | None:
    """(family, name) of a prefixed `--model` value or architecture (`timm:resnet10t`), else None."""
    match = _PREFIX.match(value)
    return (match.group(1), match.group(2)) if match else None


def family_for_model(model: str) -> ModelFamily:
    """The family a `--model` value belongs to; an unknown prefix is a one-line UserError."""
    registered = families()
    split = split_name(model)
    if split is not None:
        family = registered.get(split[0])
        if family is not None and family.prefixed:
            return family
    for family in _unprefixed(registered):
        if family.claims is not None and family.claims(model):
            return family
    raise UserError(f"--model {model!r} names no model family; --model takes {usage()}")


def family_for_arch(arch: str) -> ModelFamily | None:
    """The family that builds a payload's architecture, or None."""
    registered = families()
    split = split_name(arch)
    if split is not None and split[0] in registered and registered[split[0]].prefixed:
        return registered[split[0]]
    for family in _unprefixed(registered):
        if family.builds is not None and family.builds(arch):
            return family
    return None


def _unprefixed(registered: dict[str, ModelFamily]) -> list[ModelFamily]:
    """The unprefixed families in the order they are asked: registration order, catch-alls last."""
    return sorted((f for f in registered.values() if not f.prefixed), key=lambda f: f.catch_all)


def instantiate(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    """A randomly initialised module of `arch` (weights from the global RNG; wrap in
    `torch.random.fork_rng` to seed it)."""
    family = family_for_arch(arch)
    if family is None:
        raise ValueError(f"no model family builds the architecture {arch!r}")
    return family.instantiate(arch, arch_kwargs)


def model_flag(model_id: str) -> str:
    """The `--model` value that names a model id again (`timm-resnet10t` -> `timm:resnet10t`);
    other ids (torchvision names, checkpoint stems) unchanged."""
    for family in families().values():
        if family.prefixed and model_id.startswith(f"{family.name}-"):
            return f"{family.name}:{model_id[len(family.name) + 1 :]}"
    return model_id


def usage() -> str:
    """Every family's way of naming a model, for help texts and errors."""
    return ", ".join(family.usage for family in families().values())
