"""Where the work ran: the explained model's forward passes (on the model replicas, Ray actors,
or in the driver process) and the rendered images (on the render pool's actors or in the driver,
its local process pool included). The commands' work runs on the pools (issue 19); the driver
counts are what a library caller doing the work in process gets, and the check that a command
does none.

Two process-wide ledgers. `FORWARDS`: the replica pool counts every batch a replica returns
(`count("replicas", images)`), and `count_driver_forwards(module)` hooks the driver's copy of the
model so that every call of it counts (`driver`), gradients (attribution, integrated gradients)
and early-stopped passes included. `RENDERS`: a rendered probe set rendered in process counts
its images as the driver's (not when read from the cache), `CountedRenderer` the renders it
passes on (an in-process renderer), the render pool what its workers return (probe and scoring
sets rendered on it, the agents' renders and edits). A command takes `snapshot()` before
and after its work and reports the difference (`Counts.minus`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

Where = Literal["replicas", "render_pool", "driver"]
WHERE: tuple[Where, ...] = ("replicas", "driver")
"""Where the model's forward passes run."""
RENDER_WHERE: tuple[Where, ...] = ("render_pool", "driver")
"""Where images are rendered."""


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
"""This process's forward passes of the explained model."""


@dataclass(frozen=True)
class RenderCounts:
    """Rendered images by where they were rendered."""

    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RENDER_WHERE, 0))

    def minus(self, before: RenderCounts) -> RenderCounts:
        return RenderCounts(images={w: self.images[w] - before.images[w] for w in RENDER_WHERE})

    def to_dict(self) -> dict[str, int]:
        """{"render_pool": n, "driver": m}, the JSON of `run_sweep.py --json`."""
        return dict(self.images)

    def words(self) -> str:
        """'rendered images: 0 on the render pool, 1,000 in the driver'."""
        pool, driver = self.images["render_pool"], self.images["driver"]
        return f"rendered images: {pool:,} on the render pool, {driver:,} in the driver"


class RenderLedger:
    """Thread-safe running counts of rendered images."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, int] = dict.fromkeys(RENDER_WHERE, 0)

    def count(self, where: Where, images: int) -> None:
        with self._lock:
            self._images[where] += images

    def snapshot(self) -> RenderCounts:
        with self._lock:
            return RenderCounts(images=dict(self._images))


RENDERS = RenderLedger()
"""This process's rendered images."""


class CountedRenderer:
    """A renderer (`render_many(scenes)`) whose every image counts as rendered `where`."""

    def __init__(self, renderer: Any, where: Where = "driver") -> None:
        self.renderer, self.where = renderer, where

    def render_many(self, scenes: Any) -> Any:
        results = self.renderer.render_many(scenes)
        RENDERS.count(self.where, len(results))
        return results

_HOOKED = "_coin_scale_counts_forwards"


def count_driver_forwards(module: Any) -> Any:
    """Count every call of `module` (the driver's copy of the explained model) as a driver forward
    pass of its batch's images; idempotent; returns `module`."""
    if getattr(module, _HOOKED, False):
        return module

    def pre_hook(_module: Any, args: tuple[Any, ...]) -> None:
        first = args[0] if args else None
        shape: tuple[int, ...] = tuple(getattr(first, "shape", ()))
        FORWARDS.count("driver", int(shape[0]) if len(shape) else 1)

    module.register_forward_pre_hook(pre_hook)
    setattr(module, _HOOKED, True)
    return module
