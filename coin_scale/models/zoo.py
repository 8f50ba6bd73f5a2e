"""The registry of coin-scale's own architectures, by name, so checkpoints can say which one
they hold. Each architecture lives in its own module of `coin_scale.models` and registers itself
with `@register("name")` (`probe_cnn`, `attribute_net`, `synthetic_model`); the registry imports
those modules on first use.

`build(arch, **kwargs)` is to project architectures what `torchvision.models.get_model` is to
torchvision's: the `checkpoint` model family (`coin_scale.models.checkpoint`, see
`coin_scale.models.families`) builds from this registry when a checkpoint names its architecture. Every architecture here ends in `avgpool -> flatten -> fc` right after its last
block, so `coin_scale.chain.attribution` attributes logits exactly to that block's units.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from coin_scale.errors import close_matches

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
"""Builders by architecture name; fill it with `@register("name")`; read it through
`architectures()`, which first imports the built-in architectures."""

BUILTIN_MODULES = (
    "coin_scale.models.probe_cnn",
    "coin_scale.models.attribute_net",
    "coin_scale.models.synthetic_model",
)
"""Modules whose import registers coin-scale's own architectures."""

SYNTHETIC_UNITS_ARCH = "synthetic_units"
"""The zoo name of synthetic units: their rows are stored as kind `synthetic`, not `neuron`."""


def architectures() -> dict[str, Callable[..., nn.Module]]:
    """Every registered architecture by name, the built-in ones included."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return ARCHITECTURES


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to `ARCHITECTURES` under `name`."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = builder
        return builder

    return add


def build(arch: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised model of a registered architecture (weights from the global RNG;
    wrap in `torch.random.fork_rng` to seed it)."""
    registered = architectures()
    if arch not in registered:
        names = sorted(registered)
        hint = close_matches(arch, names)
        raise ValueError(
            f"unknown coin-scale architecture {arch!r}; "
            + (f"did you mean: {hint}? " if hint else "")
            + f"registered: {', '.join(names)}"
        )
    return registered[arch](**kwargs)
