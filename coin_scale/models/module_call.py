"""Work on the explained model as a small picklable spec: `ModuleCall(fn, *args)` is
`fn(module, *args, **kwargs)`, sent to a model replica (`ModelReplica.call`) so that the driver
holds no copy of the model (issue 19).

`fn` must be a top-level function of coin-scale (attribution, chain edges, ablations, scoring,
layer listing): it travels by name, never as code, and a lambda, a closure or a function from
elsewhere is refused when the call is made. Its arguments are plain data (tensors, layouts,
records, an SAE module's weights). `run_counted` runs one on a module and counts the module's
forward passes (gradient passes included) and their images, which the replica returns with the
value so the driver's ledger can count them as the replicas'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

ALLOWED_PREFIX = "coin_scale."


@dataclass(frozen=True)
class ModuleCall:
    """`fn(module, *args, **kwargs)` on the replica's copy of the model."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = getattr(self.fn, "__qualname__", "")
        where = getattr(self.fn, "__module__", "") or ""
        if not where.startswith(ALLOWED_PREFIX) or "<" in name or "." in name:
            raise ValueError(
                f"a model call runs a top-level coin-scale function, not {where}.{name or self.fn!r}"
            )

    @classmethod
    def of(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ModuleCall:
        return cls(fn, args, kwargs)

    @property
    def name(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"

    def __call__(self, module: torch.nn.Module) -> Any:
        return self.fn(module, *self.args, **self.kwargs)


@dataclass(frozen=True, slots=True)
class CallResult:
    """A model call's value and the forward passes (and images) it made."""

    value: Any
    passes: int
    images: int
    seconds: float = 0.0
    batch_id: int = 0


def run_counted(call: ModuleCall, module: torch.nn.Module) -> CallResult:
    """`call(module)` with its forward passes counted (every call of `module`, whatever its
    batch; a pass stopped early after a layer counts too)."""
    import time

    passes = images = 0

    def pre_hook(_m: torch.nn.Module, args: tuple[Any, ...]) -> None:
        nonlocal passes, images
        shape = tuple(getattr(args[0], "shape", ())) if args else ()
        passes += 1
        images += int(shape[0]) if shape else 1

    start = time.perf_counter()
    handle = module.register_forward_pre_hook(pre_hook)
    try:
        value = call(module)
    finally:
        handle.remove()
    return CallResult(value, passes, images, time.perf_counter() - start)


class ModelRunner(Protocol):
    """Runs model calls somewhere (`runtime.pools.ReplicaModel`: one model replica) and returns
    each call's value."""

    def __call__(self, call: ModuleCall) -> Any: ...

    def release(self) -> None:
        """Free what holds the model (a later call starts it again)."""
