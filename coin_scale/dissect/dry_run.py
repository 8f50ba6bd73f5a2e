"""What a dissection would do, before it does it (`coin-scale dissect --dry-run`): its images,
forward passes and batches, whether it is cached, the explainer's work, and a time estimate from
one batch timed here. Nothing is written and Ray is not started."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.pipeline import plan_dissection
from coin_scale.errors import ResourceError
from coin_scale.models import build_module
from coin_scale.models.activations import ActivationCapture, decode_batch
from coin_scale.storage import Warehouse


@dataclass(frozen=True)
class DissectEstimate:
    """The planned work of one dissection."""

    model: str
    layer: str
    units: int
    unit_kind: str
    images: int
    batches: int
    batch_size: int
    dissection_id: str
    cached: bool
    images_per_s: float | None
    """One batch's throughput measured in this process (None: not measured)."""
    explainer: str | None

    @property
    def forward_seconds(self) -> float | None:
        if self.cached or not self.images_per_s:
            return 0.0 if self.cached else None
        return self.images / self.images_per_s

    def lines(self) -> list[str]:
        """The plan in words."""
        kind = "SAE latents" if self.unit_kind == "sae" else "units"
        out = [
            f"plan: dissect {self.units} {kind} of {self.model}/{self.layer} over {self.images} "
            f"probe images: {self.batches} batches of {self.batch_size}, {self.images} forward passes",
        ]
        if self.cached:
            out.append(
                f"cached: dissection {self.dissection_id} exists; it would be reused (--force recomputes)"
            )
        elif self.forward_seconds is not None:
            out.append(
                f"time: one batch ran at {self.images_per_s:.1f} img/s in this process: about "
                f"{_duration(self.forward_seconds)} of forward passes on one such replica, plus Ray's "
                "start-up (a few seconds); replicas on GPUs run faster"
            )
        if self.explainer == "offline":
            out.append(
                f"explain: every one of the {self.units} {kind} offline (formulas over the probe's "
                "concepts, no network): 0 LLM calls, 0 tokens, $0.00, well under a minute"
            )
        elif self.explainer in ("clip", "clip-formula"):
            out.append(
                f"explain: every one of the {self.units} {kind} with {self.explainer}: one "
                f"image-text forward pass per probe image ({self.images}) and per concept, both "
                "cached after the first run; 0 LLM calls, $0.00"
            )
        out.append("nothing was written and Ray was not started (dry run)")
        return out


def estimate_dissection(
    config: DissectConfig, *, explainer: str | None, measure: bool = True
) -> DissectEstimate:
    """Plan `config` (validating model, layer, probe and SAE) and time one batch locally."""
    plan = plan_dissection(config)
    try:
        cached = not config.force and Warehouse(config.warehouse, create=False).has(
            "dissections", plan.dissection_id
        )
    except ResourceError:  # no warehouse yet: nothing cached
        cached = False
    images = len(plan.probe.images)
    rate = None
    if measure and not cached and images:
        rate = _images_per_second(plan, config.batch_size)
    return DissectEstimate(
        model=plan.payload.model_id, layer=plan.layer.name, units=plan.n_units,
        unit_kind=plan.unit_kind, images=images, batches=math.ceil(images / config.batch_size),
        batch_size=config.batch_size, dissection_id=plan.dissection_id, cached=cached,
        images_per_s=rate, explainer=explainer,
    )  # fmt: skip


def _images_per_second(plan, batch_size: int) -> float | None:  # type: ignore[no-untyped-def]
    """Decode and run one batch (after a warm-up pass) the way a replica does."""
    items = [(im.index, im.path) for im in plan.probe.images[:batch_size]]
    decoded = decode_batch(items, plan.payload.preprocess)
    if not decoded.indices:
        return None
    capture = ActivationCapture(
        build_module(plan.payload), {plan.layer.name: plan.layer.layout}, ("max",)
    )
    pixels = plan.payload.preprocess.normalize(decoded.pixels)
    with torch.inference_mode():
        capture(pixels[:1])
        began = time.perf_counter()
        capture(
            plan.payload.preprocess.normalize(decode_batch(items, plan.payload.preprocess).pixels)
        )
        elapsed = time.perf_counter() - began
    return len(decoded.indices) / max(elapsed, 1e-6)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
