"""`train-sae` on the driver: plan (validate every input before any work), the activation pass
through the model replicas into the fp16 cache, training, replacement metrics, checkpoint.

The replicas come from the caller (`open_pool`; on Ray through `coin_scale.runtime.sae`): this
module never starts Ray itself."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from coin_scale.errors import ResourceError, UserError
from coin_scale.models import (
    LayerInfo,
    ModelPayload,
    ModelSource,
    build_module,
    find_layer,
    resolve_model,
)
from coin_scale.models.batches import MapsResult, OpenReplicas, ReplicaWork
from coin_scale.models.loading import payload_layers
from coin_scale.models.sae import SparseAutoencoder
from coin_scale.models.sae_config import SAEConfig, SAEKind
from coin_scale.probe import ProbeSet, scan_probe
from coin_scale.sae.cache import MANIFEST, ActivationCacheReader, ActivationCacheWriter
from coin_scale.sae.checkpoint import save_sae
from coin_scale.sae.replace import replacement_metrics
from coin_scale.sae.train import Metrics, train_sae

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainSAERequest:
    """The `train-sae` flags: where activations come from, the SAE, and where things go."""

    model: str
    weights: str = "default"
    seed: int = 0
    """Seed of random model weights (--weights none), of the SAE's initial weights and shuffles."""
    layer: str
    probe: str
    out: str
    """Checkpoint path (safetensors)."""
    expansion: int = 8
    k: int = 32
    kind: SAEKind = "topk"
    steps: int = 10_000
    batch_tokens: int = 4096
    log_every: int = 100
    cache: str | None = None
    """Activation cache directory; None: `<warehouse>/_cache/sae/<model>-<layer>-<key>`."""
    warehouse: str = "warehouse"
    address: str | None = None
    batch_size: int = 32
    """Images per replica call in the activation pass."""
    replicas: int | None = None
    replacement_images: int = 256
    """Probe images (evenly spaced) on which the layer is replaced by the SAE's reconstruction."""


@dataclass(frozen=True)
class SAEPlan:
    """Everything resolved before any Ray work or any file is written."""

    request: TrainSAERequest
    config: SAEConfig
    payload: ModelPayload
    layer: LayerInfo
    probe: ProbeSet
    cache_dir: Path
    out: Path


@dataclass(frozen=True)
class TrainSAEResult:
    """What a run produced: the checkpoint, its metrics, and where the activations came from."""

    out: Path
    config: SAEConfig
    metrics: Metrics
    cache_dir: Path
    cache_reused: bool
    images_ok: int
    images_unreadable: int
    tokens: int
    pass_seconds: float
    train_seconds: float


def plan_train_sae(request: TrainSAERequest) -> SAEPlan:
    """Validate output paths, probe, model, layer and SAE config; raise UserError on bad input."""
    out = Path(request.out).expanduser()
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass the checkpoint's file path")
    _check_writable(out.parent, f"--out {out}")
    for name in ("replacement_images", "batch_size"):
        value = getattr(request, name)
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    probe = scan_probe(request.probe)
    payload = resolve_model(
        ModelSource(model=request.model, weights=request.weights, seed=request.seed)
    )
    layers = payload_layers(payload)  # traced on the meta device: the driver builds no model
    layer = find_layer(layers, request.layer, payload.model_id)
    if layer.layout != "nchw":
        raise UserError(
            f"layer {layer.name!r} of {payload.model_id} outputs {layer.layout} activations of "
            f"shape {layer.shape}; SAEs here need a conv layer's (channel, height, width) maps; "
            "pick a conv layer or block from `coin-scale layers`"
        )
    try:
        config = SAEConfig(
            model=payload.model_id, layer=layer.name, d_in=layer.units,
            expansion=request.expansion, k=request.k, kind=request.kind, steps=request.steps,
            batch_tokens=request.batch_tokens, log_every=request.log_every, seed=request.seed,
            probe_id=probe.probe_id,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    cache_dir = _cache_dir(request, payload, layer, probe)
    return SAEPlan(request, config, payload, layer, probe, cache_dir, out)


def train_sae_on_probe(
    request: TrainSAERequest, *, open_pool: OpenReplicas, progress: bool = True
) -> TrainSAEResult:
    """Plan, fill (or reuse) the activation cache, train, measure the replacement, save.

    `open_pool` starts the model replicas of the activation pass, only when the cache is not
    already full (the driver, `coin_scale.runtime.sae.run_train_sae`, passes replicas on Ray)."""
    plan = plan_train_sae(request)
    start = time.perf_counter()
    reused = _finished_cache(plan) is not None
    n_ok, n_failed = (0, 0) if reused else activation_pass(plan, open_pool, progress=progress)
    pass_seconds = time.perf_counter() - start
    reader = _open_cache(plan)
    tokens_per_image = plan.layer.shape[1] * plan.layer.shape[2]
    if reused:
        n_ok = reader.tokens // tokens_per_image
        log.info(
            "reusing the activation cache at %s (%d tokens of %s %s from %d images of probe %s); "
            "delete it to recompute", plan.cache_dir, reader.tokens, plan.config.model,
            plan.layer.name, n_ok, plan.probe.probe_id,
        )  # fmt: skip
    start = time.perf_counter()
    stats = reader.statistics()
    result = train_sae(
        plan.config,
        reader.stream(plan.config.batch_tokens, seed=plan.config.seed, epochs=None),
        mean=stats.mean,
        input_scale=stats.input_scale,
        progress=progress,
        on_metrics=lambda m: log.info("%s", metrics_line(m, plan.config.steps)),
    )
    train_seconds = time.perf_counter() - start
    replaced = measure_replacement(plan, result.sae)
    metrics: Metrics = {
        **result.final_metrics, **replaced, "cache_tokens": reader.tokens, "images": n_ok,
        "train_seconds": round(train_seconds, 3),
    }  # fmt: skip
    try:
        save_sae(plan.out, result.sae, plan.config, metrics)
    except OSError as err:
        raise ResourceError(f"cannot write the SAE checkpoint to {plan.out}: {err}") from err
    return TrainSAEResult(
        out=plan.out, config=plan.config, metrics=metrics, cache_dir=plan.cache_dir,
        cache_reused=reused, images_ok=n_ok, images_unreadable=n_failed, tokens=reader.tokens,
        pass_seconds=pass_seconds, train_seconds=train_seconds,
    )  # fmt: skip


def metrics_line(metrics: Metrics, steps: int | None = None) -> str:
    """One line of the numbers a person watches: FVU, L0, dead fraction (and agreement, KL)."""

    def num(name: str, fmt: str) -> str:
        value = metrics.get(name)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "n/a" if missing else format(value, fmt)

    parts = [f"step {metrics.get('step')}" + (f"/{steps}" if steps else "")]
    parts += [f"fvu {num('fvu', '.4f')}", f"l0 {num('l0', '.1f')}"]
    parts += [f"dead {num('dead_fraction', '.3f')}", f"loss {num('loss', '.4f')}"]
    if "top1_agreement" in metrics:
        parts += [f"top1_agreement {num('top1_agreement', '.3f')}", f"kl {num('kl', '.4f')}"]
    return "  ".join(parts)


def activation_pass(
    plan: SAEPlan, open_pool: OpenReplicas, *, progress: bool = True
) -> tuple[int, int]:
    """Every probe image through the replicas from `open_pool`; every batch's conv maps into
    the cache.

    Returns (images that ran, unreadable images). The cache's manifest is written only at the
    end, so an interrupted pass leaves an unfinished cache that the next run clears."""
    request, layer, probe = plan.request, plan.layer, plan.probe
    items = [(im.index, im.path) for im in probe.images]
    size = request.batch_size
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    writer: ActivationCacheWriter | None = None
    failures: dict[int, str] = {}
    n_ok = 0
    with open_pool(ReplicaWork(plan.payload, {layer.name: layer.layout}, ("max",))) as replicas:
        bar = tqdm(
            total=len(items), unit="img", desc=f"activations {layer.name}", disable=not progress,
            dynamic_ncols=True,
        )  # fmt: skip
        try:
            for result in replicas.run_maps(batches, layer.name):
                if len(result.indices):
                    writer = _cache_maps(plan, writer, result)
                    n_ok += len(result.indices)
                failures.update(dict(result.failures))
                bar.update(len(result.indices) + len(result.failures))
                if result.failures:
                    bar.set_postfix(unreadable=len(failures))
        finally:
            bar.close()
    if failures:
        log.warning(
            "%d of %d probe images could not be read and were skipped; first: %s",
            len(failures), len(items), next(iter(failures.values())),
        )  # fmt: skip
    if writer is None:
        raise UserError(
            f"none of the {len(items)} images under {probe.root} could be read: the activation "
            "cache would be empty; pass --probe with readable JPEG, PNG or WebP images"
        )
    manifest = writer.close()
    log.info("wrote %d tokens from %d images to %s", manifest.tokens, n_ok, plan.cache_dir)
    return n_ok, len(failures)


def _cache_maps(
    plan: SAEPlan, writer: ActivationCacheWriter | None, result: MapsResult
) -> ActivationCacheWriter:
    """Add one batch's maps to the cache, opening it on the first batch; returns the writer."""
    layer = plan.layer
    if writer is None:
        writer = ActivationCacheWriter(
            plan.cache_dir, layer.units, seed=plan.request.seed,
            model=plan.config.model, layer=layer.name, probe_id=plan.probe.probe_id,
        )  # fmt: skip
    try:
        writer.add(torch.from_numpy(result.maps.copy()))  # Ray returns it read-only
    except ValueError as err:
        raise UserError(f"{layer.name} of {plan.config.model}: {err}") from None
    return writer


def measure_replacement(plan: SAEPlan, sae: SparseAutoencoder) -> dict[str, Any]:
    """Top-1 agreement and KL with the layer replaced by the SAE, on up to
    `replacement_images` evenly spaced probe images, with the model built in the driver; none
    for a model whose output is an embedding (top-1 and KL are over class logits)."""
    from coin_scale.models.activations import decode_batch

    if not plan.payload.has_class_logits:
        log.info("%s outputs an embedding, not class logits: no top-1 agreement or KL "
                 "of the replaced layer", plan.payload.model_id)  # fmt: skip
        return {}

    images = plan.probe.images
    count = min(plan.request.replacement_images, len(images))
    picks = sorted({int(i) for i in np.linspace(0, len(images) - 1, count)})
    items = [(images[i].index, images[i].path) for i in picks]
    device = sae.w_enc.device
    module = build_module(plan.payload).to(device)
    preprocess = plan.payload.preprocess
    size = plan.request.batch_size

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, len(items), size):
            decoded = decode_batch(items[start : start + size], preprocess)
            if decoded.indices:
                yield preprocess.normalize(decoded.pixels.to(device))

    try:
        found = replacement_metrics(module, plan.layer.name, sae, batches(), layout="nchw")
    except ValueError as err:
        raise UserError(f"cannot measure the replaced layer: {err}") from None
    return {
        "top1_agreement": found["top1_agreement"], "kl": found["kl"],
        "replacement_images": int(found["images"]),
    }  # fmt: skip


def _cache_dir(
    request: TrainSAERequest, payload: ModelPayload, layer: LayerInfo, probe: ProbeSet
) -> Path:
    """`--cache`, or a directory under the warehouse keyed by model, weights, layer and probe."""
    if request.cache is not None:
        path = Path(request.cache).expanduser()
        if path.exists() and not path.is_dir():
            raise UserError(f"--cache {path} is a file; pass a directory for the activation cache")
        _check_writable(path, f"--cache {path}")
        return path
    from coin_scale.storage import Warehouse
    from coin_scale.storage.fs import local_dir

    Warehouse(request.warehouse)  # creates it and checks it is writable
    key = {
        "model": payload.model_id, "arch": payload.arch, "arch_kwargs": payload.arch_kwargs,
        "weights": payload.weights_id, "layer": layer.name, "probe": probe.probe_id,
        "preprocess": payload.preprocess.to_dict(),
    }  # fmt: skip
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{payload.model_id}-{layer.name}-{digest}")
    return local_dir(request.warehouse, f"_cache/sae/{name}")  # node-local for an s3:// warehouse


def _finished_cache(plan: SAEPlan) -> ActivationCacheReader | None:
    """The complete cache for this model, layer and probe at `cache_dir`, if there is one."""
    if not (plan.cache_dir / MANIFEST).is_file():
        return None
    reader = _open_cache(plan)
    manifest = reader.manifest
    want = (plan.config.model, plan.layer.name, plan.probe.probe_id, plan.layer.units)
    got = (manifest.model, manifest.layer, manifest.probe_id, manifest.d_in)
    if got != want:
        raise UserError(
            f"the activation cache at {plan.cache_dir} holds {got[0]} {got[1]} ({got[3]} channels) "
            f"over probe {got[2]}; this run needs {want[0]} {want[1]} ({want[3]}) over probe "
            f"{want[2]}; pass another --cache or delete that directory"
        )
    return reader


def _open_cache(plan: SAEPlan) -> ActivationCacheReader:
    try:
        return ActivationCacheReader(plan.cache_dir)
    except ValueError as err:
        raise UserError(f"{err}; delete {plan.cache_dir} to fill it again") from None


def _check_writable(directory: Path, what: str) -> None:
    """The nearest existing ancestor of `directory` is a directory a file can be created in;
    nothing is created at `directory` itself (so a bad input leaves nothing behind)."""
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".coin-scale-probe-"):
                pass
        except OSError as err:
            problem = f"cannot create a file in {existing}: {err}"
    if problem:
        raise ResourceError(f"cannot write {what}: {problem}; pass a writable location")
