"""`coin-scale bench sae`: an SAE on a layer of the probe CNN, judged on held-out images.

One run trains an SAE through the `train-sae` pipeline (activation pass on Ray into the fp16
cache, training) on a rendered single-object probe set, then measures on a probe set rendered from
another seed: FVU and L0 of the reconstruction, top-1 agreement and KL of the model with the layer
replaced, and the offline explainer's IoU over the layer's neurons against its SAE features. The
two IoU evaluations are identical: both unit kinds are reduced by max over space and explained
with the same `OfflineExplainerConfig` over the same held-out images. Two controls say how much of
an IoU is real: the same explanation on shuffled images (chance), and the IoU of the units whose
mask is full (sparse features that fire on few images get small masks, which formulas fit by
chance; that is why the held-out set defaults to 2,000 images, not 500). A third comparison
(`compare_top_n`) judges every unit, neuron or feature, on a mask of the same size: its n most
active images. Last (`scores`, on by default), every unit's formula from that one explanation is
scored with `coin_scale.eval.explanation_scores` on a third rendered set the explainer never saw
(the sweep's scoring set, `score_images` scenes): predictive AUC, Cohen's d, F1, AUPRC and the
InterpScore parts S, C, R; `score_summary` gives their distribution per unit kind.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from coin_scale.bench.sae_summaries import (
    FULL_MASK_SHARE,
    compare_top_n,
    compare_units,
    pooled_units,
    score_summary,
    target_checks,
)
from coin_scale.explain import OfflineExplainerConfig, explain_units
from coin_scale.explain.explanation import Explanation
from coin_scale.models.sae import SparseAutoencoder, tokens_from_conv
from coin_scale.models.sae_config import SAE_KINDS, SAEKind
from coin_scale.probe.concepts import concepts_from_probe

if TYPE_CHECKING:
    from coin_scale.models.loading import ModelPayload

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SAEBenchConfig:
    """What `coin-scale bench sae` trains and measures."""

    model: str
    """Checkpoint of the model (the CLI resolves `probe` to the cached probe CNN)."""
    layer: str = "layer4"
    """Conv layer (or block) whose maps the SAE reconstructs."""
    expansion: int = 8
    """Latents per channel."""
    k: int = 8
    """Active latents per token (topk), or on average per token of a batch (batchtopk)."""
    kind: SAEKind = "topk"
    steps: int = 3000
    """Optimiser steps."""
    batch_tokens: int = 1024
    """Tokens per optimiser step."""
    train_images: int = 4000
    """Rendered single-object images the SAE is trained on (tokens: images x height x width)."""
    heldout_images: int = 2000
    """Rendered single-object images, from `heldout_seed`, everything is measured on. With 500,
    a third of an x8 k8 SAE's features fire on fewer than 5 of them, and the formula search fits
    such tiny masks by chance: their mean IoU is mostly chance (BENCHMARKS.md)."""
    train_seed: int = 0
    """Scene seed of the training probe set."""
    heldout_seed: int = 7
    """Scene seed of the held-out probe set; must differ from `train_seed`."""
    sae_seed: int = 0
    """Seed of the SAE's initial weights and of the token shuffle."""
    work_dir: str | None = None
    """Where rendered probe sets and activation caches are kept between runs; None:
    `$COIN_SCALE_CACHE` (else ~/.cache/coin-scale)."""
    out: str | None = None
    """Keep the trained SAE's checkpoint at this path; None: a temporary file, deleted."""
    address: str | None = None
    """Ray address for the activation pass; None starts a local Ray."""
    batch_size: int = 64
    """Images per forward pass (activation pass and held-out pass)."""
    explainer: OfflineExplainerConfig = field(default_factory=OfflineExplainerConfig)
    """The one explainer configuration used for neurons and features alike."""
    top_n: tuple[int, ...] | None = None
    """Mask sizes of the same-size comparison (`top_n_summary`): every unit, neuron or feature,
    is judged on the mask of its n most active images. None: one size, the (1 - quantile) x
    held-out images that the quantile rule gives a neuron; () skips it."""
    scores: bool = True
    """Score every unit's formula (neurons and features) on the scoring set (`score_summary`)."""
    score_images: int = 1000
    """Scenes of the scoring set (`load_scoring_set`, seed `SCORING_SEED`, rendered into the
    coin-scale cache like the sweep's). More than the sweep's 256, since formulas fitted to rare
    features need `MIN_IMAGES` satisfying images: of h01's 1,024 features 545 are scorable on
    256 images and 611 on 1,000 (BENCHMARKS.md)."""

    def __post_init__(self) -> None:
        for name in ("expansion", "k", "steps", "batch_tokens", "train_images", "heldout_images",
                     "batch_size", "score_images"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        for name in ("train_seed", "heldout_seed", "sae_seed"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}"
                )
        if self.kind not in SAE_KINDS:
            raise ValueError(f"--kind must be one of {', '.join(SAE_KINDS)}, got {self.kind!r}")
        if self.top_n is not None and any(n < 1 for n in self.top_n):
            raise ValueError(f"--top-n sizes must be >= 1, got {list(self.top_n)}")
        if self.train_seed == self.heldout_seed:
            raise ValueError(
                f"--train-seed and --heldout-seed are both {self.train_seed}: the held-out images "
                "would be the training images; pass different seeds"
            )
        from coin_scale.probe.scoring_set import SCORING_SEED

        if self.scores and (self.heldout_seed, self.heldout_images) == (
            SCORING_SEED,
            self.score_images,
        ):
            raise ValueError(
                f"--score-images {self.score_images} with --heldout-seed {SCORING_SEED} and "
                f"--heldout-images {self.heldout_images}: the scoring set would be the held-out "
                "images the explainer saw; pass another --score-images"
            )


# -- the run ----------------------------------------------------------------------------------


def layer_maps(
    module: torch.nn.Module, layer: str, batches: Iterator[torch.Tensor]
) -> torch.Tensor:
    """One layer's whole output (image, ...) over preprocessed image batches, in the driver."""
    captured: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: captured.append(out.detach().float())
    )
    try:
        with torch.inference_mode():
            for inputs in batches:
                module(inputs)
    finally:
        handle.remove()
    return torch.cat(captured)


def run_sae_bench(config: SAEBenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train one SAE on the training probe set, measure it on the held-out one; a JSON-able dict."""
    from coin_scale.cache import cache_root
    from coin_scale.models import ModelSource, resolve_model
    from coin_scale.probe.rendered import rendered_probe

    root = Path(config.work_dir).expanduser() if config.work_dir else cache_root()
    size = resolve_model(ModelSource(model=config.model)).preprocess.crop
    train_probe, heldout_probe = (
        Path(
            rendered_probe(n, size, progress=progress, single_object=True, seed=seed, root_dir=root)
        )
        for n, seed in (
            (config.train_images, config.train_seed),
            (config.heldout_images, config.heldout_seed),
        )
    )
    with tempfile.TemporaryDirectory(prefix="coin-scale-bench-sae-") as tmp:
        out = Path(config.out).expanduser() if config.out else Path(tmp) / "sae.safetensors"
        train = _train(config, train_probe, root, out, progress=progress)
        heldout, iou, top_n, scores = _measure(config, heldout_probe, out, progress=progress)
    return {
        "benchmark": "sae",
        "model": config.model,
        "layer": config.layer,
        "config": {k: v for k, v in asdict(config).items() if k not in ("explainer", "address")},
        "explainer": {**asdict(config.explainer), "reduction": "max over space"},
        "train": train,
        "heldout": heldout,
        "iou": iou,
        "iou_top_n": top_n,
        "targets": target_checks(train, heldout, iou, top_n),
        "scores": scores,
    }


def _train(
    config: SAEBenchConfig, probe: Path, root: Path, out: Path, *, progress: bool
) -> dict[str, Any]:
    """The `train-sae` pipeline on the training probe set; its cache is kept under `root`."""
    from coin_scale.runtime.sae import run_train_sae
    from coin_scale.sae.pipeline import TrainSAERequest

    request = TrainSAERequest(
        model=config.model, seed=config.sae_seed, layer=config.layer, probe=str(probe),
        out=str(out), expansion=config.expansion, k=config.k, kind=config.kind,
        steps=config.steps, batch_tokens=config.batch_tokens,
        log_every=max(1, config.steps // 6), warehouse=str(root / "bench-sae"),
        address=config.address, batch_size=config.batch_size, replacement_images=256,
    )  # fmt: skip
    result = run_train_sae(request, progress=progress)
    m = result.metrics
    log.info(
        "trained %s x%d k%d on %d tokens in %.0fs (train fvu %.4f, dead %s)", config.kind,
        config.expansion, config.k, result.tokens, result.train_seconds, m["fvu"],
        m.get("dead_fraction"),
    )  # fmt: skip
    return {
        "images": result.images_ok, "tokens": result.tokens, "d_sae": result.config.d_sae,
        "fvu": m["fvu"], "l0": m["l0"], "dead_fraction": m.get("dead_fraction"),
        "top1_agreement": m.get("top1_agreement"), "steps_done": m.get("steps_done"),
        "cache_reused": result.cache_reused, "pass_seconds": round(result.pass_seconds, 2),
        "train_seconds": round(result.train_seconds, 2),
    }  # fmt: skip


def _measure(
    config: SAEBenchConfig, probe_root: Path, sae_path: Path, *, progress: bool
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Held-out reconstruction, replacement, IoU comparison, the same-size comparison and the
    explanations' scores (None with `scores` off), in the driver."""
    from coin_scale.models import ModelSource, build_module, resolve_model
    from coin_scale.models.activations import decode_batch
    from coin_scale.probe import scan_probe
    from coin_scale.sae import evaluate_sae, load_sae, replacement_metrics

    start = time.perf_counter()
    payload = resolve_model(ModelSource(model=config.model))
    module = build_module(payload).eval()
    sae, _, _ = load_sae(sae_path, expect_layer=config.layer)
    probe = scan_probe(str(probe_root))
    pre = payload.preprocess
    items = [(im.index, im.path) for im in probe.images]
    decoded = decode_batch(items, pre)
    if decoded.failures:
        raise ValueError(
            f"{len(decoded.failures)} held-out images unreadable: {decoded.failures[0]}"
        )
    pixels = pre.normalize(decoded.pixels)
    maps = layer_maps(module, config.layer, iter(pixels.split(config.batch_size)))
    tokens = tokens_from_conv(maps)
    recon = evaluate_sae(sae, iter(tokens.split(4096)))
    replaced = replacement_metrics(module, config.layer, sae, iter(pixels.split(config.batch_size)))
    neurons, features = pooled_units(maps, sae)
    concepts = concepts_from_probe(probe)
    explained = {
        kind: explain_units(matrix, concepts, config.explainer)
        for kind, matrix in (("neurons", neurons), ("features", features))
    }
    iou = compare_units(
        neurons, features, concepts, config.explainer,
        generator=torch.Generator().manual_seed(config.heldout_seed), explained=explained,
    )  # fmt: skip
    sizes = config.top_n
    if sizes is None:
        sizes = (max(1, round((1 - config.explainer.quantile) * neurons.shape[0])),)
    top_n = compare_top_n(
        neurons, features, concepts, config.explainer,
        [min(n, neurons.shape[0]) for n in sizes],
        generator=torch.Generator().manual_seed(config.heldout_seed),
    )  # fmt: skip
    heldout = {
        "images": len(probe.images), "tokens": int(tokens.shape[0]), "fvu": recon["fvu"],
        "l0": recon["l0"], "top1_agreement": replaced["top1_agreement"], "kl": replaced["kl"],
        "unfired_fraction": float((features.amax(dim=0) <= 0).float().mean()),
        "seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    log.info(
        "held-out: fvu %.4f l0 %.1f top1 %.3f; mean IoU neurons %s / features %s",
        heldout["fvu"], heldout["l0"], heldout["top1_agreement"], iou["neurons"]["mean_iou"],
        iou["features"]["mean_iou"],
    )  # fmt: skip
    for row in top_n:
        log.info(
            "top-%d masks: mean IoU neurons %s / features %s", row["n"],
            row["neurons"]["mean_iou"], row["features"]["mean_iou"],
        )  # fmt: skip
    scores = None
    if config.scores:
        full_mask = math.floor(FULL_MASK_SHARE * (1 - config.explainer.quantile) * neurons.shape[0])
        scores = score_units(
            config, module, payload, sae, explained, full_mask=full_mask, progress=progress
        )
    return heldout, iou, top_n, scores


def score_units(
    config: SAEBenchConfig,
    module: torch.nn.Module,
    payload: ModelPayload,
    sae: SparseAutoencoder,
    explained: Mapping[str, Sequence[Explanation]],
    *,
    full_mask: int,
    progress: bool,
) -> dict[str, Any]:
    """Every neuron's and every feature's formula (`explained`, from the held-out images)
    scored by `score_explanations` on the sweep's scoring set of `config.score_images` scenes:
    `score_summary` per kind, with the seconds each took. Units the explainer left unexplained
    are passed without a formula, so `scorable` is out of every unit. Each kind's `full_mask`
    is the same summary over its units whose held-out mask held at least `full_mask` images
    (`compare_units`' full-mask units: the like-with-like subset)."""
    from coin_scale.chain.units import SAEFeatures
    from coin_scale.eval.explanation_scores import (
        CAUSAL_IMAGES,
        MIN_IMAGES,
        NO_HUMANS,
        score_explanations,
    )
    from coin_scale.eval.interpscore import InterpWeights
    from coin_scale.models.layers import Layout
    from coin_scale.probe.scoring_set import SCORING_SEED, load_scoring_set

    start = time.perf_counter()
    scoring = load_scoring_set(
        payload, single_object=True, progress=progress, n=config.score_images
    )
    out: dict[str, Any] = {
        "images": int(scoring.pixels.shape[0]), "seed": SCORING_SEED,
        "min_images": MIN_IMAGES, "causal_images": CAUSAL_IMAGES,
        "weights": InterpWeights().as_dict(), "note": NO_HUMANS,
        "load_seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    views: tuple[tuple[str, Layout | SAEFeatures], ...] = (
        ("neurons", "nchw"), ("features", SAEFeatures(sae)),
    )  # fmt: skip
    for kind, units_of in views:
        start = time.perf_counter()
        units = [(e.unit, e.formula if e.ok else None) for e in explained[kind]]
        scored = score_explanations(
            module, config.layer, units_of, payload.preprocess, units, scoring,
            seed=config.heldout_seed,
        )  # fmt: skip
        full = {e.unit for e in explained[kind] if e.ok and (e.mask_size or 0) >= full_mask}
        out[kind] = {
            **score_summary(scored), "seconds": round(time.perf_counter() - start, 2),
            "full_mask": {"min_mask": full_mask,
                          **score_summary([s for s in scored if s.unit in full])},
        }  # fmt: skip
        log.info(
            "scored %d of %d %s on %d images in %.1fs", out[kind]["scorable"], len(units), kind,
            out["images"], out[kind]["seconds"],
        )  # fmt: skip
    return out
