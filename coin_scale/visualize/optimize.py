"""The optimisation loop: Adam on an image parameterisation, the objective read through hooks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from coin_scale.errors import close_matches
from coin_scale.models.preprocess import Preprocess
from coin_scale.visualize.objectives import Captured, Objective
from coin_scale.visualize.param import ImageParam
from coin_scale.visualize.transforms import Transform, compose


@dataclass(frozen=True)
class RenderResult:
    """The optimised images and how well they do."""

    images: torch.Tensor
    """(batch, 3, size, size) float32 in [0, 1], detached, on the CPU."""
    values: torch.Tensor
    """(batch,) the objective on each final image, untransformed (one plain forward pass)."""
    history: tuple[float, ...]
    """The batch-mean objective (under transforms) at every step."""
    seconds: float
    """Wall time of the loop and the final measurement."""


@contextmanager
def capture(model: nn.Module, layers: frozenset[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store the output of each of `layers` in the yielded dict."""
    modules = dict(model.named_modules())
    missing = sorted(layer for layer in layers if layer not in modules or not layer)
    if missing:
        hint = close_matches(missing[0], [n for n in modules if n])
        raise ValueError(
            f"the model has no layer {missing[0]!r}" + (f"; close matches: {hint}" if hint else "")
        )
    store: dict[str, torch.Tensor] = {}
    handles = []
    for layer in sorted(layers):

        def hook(_m: nn.Module, _i: object, out: object, layer: str = layer) -> None:
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"layer {layer!r} outputs {type(out).__name__}, not one tensor")
            store[layer] = out

        handles.append(modules[layer].register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _normaliser(preprocess: Preprocess | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if preprocess is None:
        return lambda x: x
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return lambda x: (x - mean.to(x)) / std.to(x)


def _evaluate(
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    model_input: torch.Tensor,
    store: dict[str, torch.Tensor],
) -> torch.Tensor:
    store.clear()
    model(model_input)
    missing = sorted(objective.layers - set(store))
    if missing:
        raise ValueError(f"layer {missing[0]!r} did not run in the forward pass")
    return objective(Captured(image=image, activations=dict(store)))


DEFAULT_POLISH = 0.75
"""Transforms for the first quarter of the steps, none for the rest (`render`'s `polish`, the
default of `coin-scale visualize`): on the probe CNN's layer4 (BENCHMARKS.md) transforms
throughout leave half the units' images weaker than their best probe image (51% beat it), a
quarter of transformed steps keeps the shapes' outlines and beats it for 96%; less polish is more
legible and weaker (0.5: 90%)."""

REDIRECT_FRACTION = 0.25
"""Share of the first steps run with redirected ReLUs (`redirected_relus`); later steps use them
too while the objective is still not above zero."""


class _RedirectedReLUFn(torch.autograd.Function):
    """ReLU whose gradient also flows where the input is negative if it would raise the input:
    an image that silences a unit still gets a direction to move in."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) | (grad < 0)).to(grad.dtype)


class RedirectedReLU(nn.Module):
    """Stands in for an `nn.ReLU` during the first steps of `render`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RedirectedReLUFn.apply(x)


@contextmanager
def redirected_relus(model: nn.Module, keep: frozenset[str] = frozenset()) -> Iterator[int]:
    """Swap the model's `nn.ReLU` modules (but those named in `keep`, which are hooked) for
    `RedirectedReLU`, and back on exit; yields how many were swapped. Without it a unit after a
    ReLU that the starting image does not excite (a trained net's unit on a grey image) has zero
    gradient everywhere and the image never changes."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent_name, parent in model.named_modules():
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.ReLU) and full not in keep:
                setattr(parent, name, RedirectedReLU())
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The model in eval mode with no parameter gradients; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def measure(
    model: nn.Module, objective: Objective, images: torch.Tensor, preprocess: Preprocess | None
) -> torch.Tensor:
    """(batch,) the objective on `images` (batch, 3, height, width) in [0, 1]: one forward pass,
    no transforms, no gradients."""
    normalise = _normaliser(preprocess)
    device = next(iter(model.parameters()), torch.empty(0)).device
    images = images.to(device=device, dtype=torch.float32)
    with _frozen(model), torch.no_grad(), capture(model, objective.layers) as store:
        return _evaluate(model, objective, images, normalise(images), store).detach().cpu()


def render(
    model: nn.Module,
    objective: Objective,
    param: ImageParam,
    *,
    steps: int,
    lr: float = 0.05,
    transforms: Sequence[Transform] = (),
    seed: int = 0,
    preprocess: Preprocess | None = None,
    on_step: Callable[[int, float], None] | None = None,
    polish: float = 0.0,
) -> RenderResult:
    """Maximise `objective` over the images of `param` with Adam for `steps` steps.

    Each step draws the transforms from a generator seeded with `seed`, so on the CPU the same
    arguments (and a parameterisation built from the same seed) give the same images. The images
    are normalised with `preprocess`'s mean and std before the model (none: fed as [0, 1]).
    `on_step(step, value)` is called after every step with the batch-mean objective. The last
    `polish` fraction of the steps drops the transforms: the image keeps the structure that
    transformation robustness gave it, then is tuned to the exact input the unit will see.
    """
    if steps < 1:
        raise ValueError(f"render needs steps >= 1; got {steps}")
    if lr <= 0:
        raise ValueError(f"render needs a positive learning rate; got lr={lr}")
    if not 0.0 <= polish <= 1.0:
        raise ValueError(f"render needs polish in [0, 1]; got {polish}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    transform = compose(list(transforms))
    normalise = _normaliser(preprocess)
    optimiser = torch.optim.Adam(param.params, lr=lr)
    history: list[float] = []
    redirect_steps = max(1, int(steps * REDIRECT_FRACTION)) if steps > 1 else 0
    polish_from = steps - int(round(steps * polish))
    with _frozen(model), capture(model, objective.layers) as store:
        for step in range(steps):
            optimiser.zero_grad(set_to_none=True)
            image = param()
            silent = bool(history) and history[-1] <= 0.0
            redirect = step < redirect_steps or silent
            shown = transform(image, generator) if step < polish_from else image
            with redirected_relus(model, objective.layers) if redirect else nullcontext():
                values = _evaluate(model, objective, image, normalise(shown), store)
                (-values.sum()).backward()
            optimiser.step()
            history.append(float(values.detach().mean()))
            if on_step is not None:
                on_step(step, history[-1])
    with torch.no_grad():
        final = param().detach().float().cpu()
    values = measure(model, objective, final, preprocess)
    return RenderResult(
        images=final, values=values, history=tuple(history), seconds=time.perf_counter() - start
    )
