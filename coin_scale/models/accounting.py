"""Where the explained model's forward passes ran: on the model replicas (Ray actors) or in the
driver process (issue 19 moves every one to the replicas; this counts them meanwhile).

One process-wide `FORWARDS` ledger: the replica pool counts every batch a replica returns
(`count("replicas", images)`), and `count_driver_forwards(module)` hooks the driver's copy of the
model so that every call of it counts (`driver`), gradients (attribution, integrated gradients)
and early-stopped passes included. A command takes `FORWARDS.snapshot()` before and after its
work and reports the difference (`ForwardCounts.minus`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

Where = Literal["replicas", "driver"]
WHERE: tuple[Where, ...] = ("replicas", "driver")


@dataclass(frozen=True)
class ForwardCounts:
    """Forward passes (module calls, each a batch) and the images they carried, by where."""

    passes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WHERE, 0))
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WHERE, 0))

    def minus(self, before: ForwardCounts) -> ForwardCounts:
        return ForwardCounts(
            passes={w: self.passes[w] - before.passes[w] for w in WHERE},
            images={w: self.images[w] - before.images[w] for w in WHERE},
        )

    def to_dict(self) -> dict[str, dict[str, int]]:
        """{"replicas": {"passes", "images"}, "driver": {...}}, the JSON of `run_sweep.py --json`."""
        return {w: {"passes": self.passes[w], "images": self.images[w]} for w in WHERE}

    def words(self) -> str:
        """'forward passes of the model: 34 on the replicas (1,000 images), 12 in the driver (96
        images)'."""
        replicas = f"{self.passes['replicas']:,} on the replicas ({self.images['replicas']:,} images)"
        driver = f"{self.passes['driver']:,} in the driver ({self.images['driver']:,} images)"
        return f"forward passes of the model: {replicas}, {driver}"


class ForwardLedger:
    """Thread-safe running counts (agents measure from several threads at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passes: dict[str, int] = dict.fromkeys(WHERE, 0)
        self._images: dict[str, int] = dict.fromkeys(WHERE, 0)

    def count(self, where: Where, images: int, passes: int = 1) -> None:
        with self._lock:
            self._passes[where] += passes
            self._images[where] += images

    def snapshot(self) -> ForwardCounts:
        with self._lock:
            return ForwardCounts(passes=dict(self._passes), images=dict(self._images))


FORWARDS = ForwardLedger()
"""This process's ledger."""

_HOOKED = "_coin_scale_counts_forwards"


def count_driver_forwards(module: nn.Module) -> nn.Module:
    """Count every call of `module` (the driver's copy of the explained model) as a driver forward
    pass of its batch's images; idempotent; returns `module`."""
    if getattr(module, _HOOKED, False):
        return module

    def pre_hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        first = args[0] if args else None
        shape: tuple[int, ...] = tuple(getattr(first, "shape", ()))
        FORWARDS.count("driver", int(shape[0]) if len(shape) else 1)

    module.register_forward_pre_hook(pre_hook)
    setattr(module, _HOOKED, True)
    return module
