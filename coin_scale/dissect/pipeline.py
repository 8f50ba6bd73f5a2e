"""Whole-layer dissection: probe set -> model replicas -> per-unit top-k and statistics -> Parquet.

The replicas come from the caller (`open_pool`; on Ray through `coin_scale.runtime.dissect`):
this module plans, merges, checkpoints and persists, and never starts Ray itself."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch
from tqdm import tqdm

from coin_scale.dissect.checkpoint import (
    CheckpointClock,
    DissectCheckpoint,
    delete_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.statistics import UnitAccumulator
from coin_scale.dissect.tables import exemplars_table, probe_images_table, unit_stats_table
from coin_scale.errors import UserError
from coin_scale.models import (
    LayerInfo,
    ModelPayload,
    ModelSource,
    find_layer,
    resolve_model,
)
from coin_scale.models.activations import SAEUnits
from coin_scale.models.batches import BatchResult, BatchRunner, OpenReplicas, ReplicaWork
from coin_scale.models.loading import payload_layers
from coin_scale.models.zoo import SYNTHETIC_UNITS_ARCH
from coin_scale.probe import ProbeSet, scan_probe
from coin_scale.records import UnitKind
from coin_scale.storage import Warehouse
from coin_scale.storage.runs import RunRecorder, new_run_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DissectResult:
    """Summary of a dissection; the rows themselves are in the warehouse."""

    dissection_id: str
    run_id: str
    cached: bool
    model: str
    layer: str
    n_images: int
    n_failed: int
    n_units: int
    seconds: float
    """Wall time of the probe pass, from ready replicas to the last merged batch."""
    startup_seconds: float = 0.0
    """Time to start the replicas (process start, model build) before the probe pass."""

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class DissectPlan:
    """Everything resolved before any Ray work: the inputs and the cache key."""

    config: DissectConfig
    payload: ModelPayload
    layer: LayerInfo
    probe: ProbeSet
    dissection_id: str
    sae: SAEUnits | None = None
    """The SAE whose latents are the units (config.units == 'sae'), else None."""

    @property
    def n_units(self) -> int:
        """The layer's channels, or the SAE's latents."""
        return self.sae.config.d_sae if self.sae else self.layer.units

    @property
    def unit_kind(self) -> UnitKind:
        """What the rows call the units: `sae` latents, `synthetic` units (a checkpoint of
        `coin_scale.models.synthetic_model`, whose formulas are known) or `neuron` channels."""
        if self.sae:
            return "sae"
        return "synthetic" if self.payload.arch == SYNTHETIC_UNITS_ARCH else "neuron"


def plan_dissection(
    config: DissectConfig, *, payload: ModelPayload | None = None, probe: ProbeSet | None = None
) -> DissectPlan:
    """Validate the inputs (probe, model, layer) and derive the dissection's content key.

    A caller that already resolved the model or scanned the probe folder (the sweep) passes them,
    so the weights are not loaded and the probe files not hashed a second time. With units
    'sae' the checkpoint is loaded and checked against the layer here, before any Ray work."""
    probe = probe or scan_probe(config.probe)
    payload = payload or resolve_model(
        ModelSource(model=config.model, weights=config.weights, seed=config.seed)
    )
    layers = payload_layers(payload)  # traced on the meta device: the driver builds no model
    layer = find_layer(layers, config.layer, payload.model_id)
    sae = load_sae_units(config.sae, payload, layer) if config.units == "sae" else None
    key = {
        "model": payload.model_id, "arch": payload.arch, "arch_kwargs": payload.arch_kwargs,
        "weights": payload.weights_id, "layer": layer.name, "reduction": config.reduction,
        "top_k": config.top_k, "quantile": config.quantile, "probe": probe.probe_id,
        "preprocess": payload.preprocess.to_dict(),
    }  # fmt: skip
    if sae is not None:  # only then: the keys of neuron dissections stay as they were
        key |= {"units": "sae", "sae": sae.sha256}
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    return DissectPlan(config, payload, layer, probe, dissection_id=digest, sae=sae)


def load_sae_units(path: str | None, payload: ModelPayload, layer: LayerInfo) -> SAEUnits:
    """Load the SAE checkpoint at `path`, refusing one for another model, layer or width."""
    from coin_scale.sae.checkpoint import load_sae

    if layer.layout != "nchw":
        raise UserError(
            f"layer {layer.name!r} of {payload.model_id} outputs {layer.layout} activations; SAE "
            "units need a conv layer's (channel, height, width) maps"
        )
    if not path:
        raise UserError("--units sae needs --sae PATH, the SAE checkpoint of this layer")
    source = Path(path).expanduser()
    try:
        sae, sae_config, metrics = load_sae(
            source, expect_model=payload.model_id, expect_layer=layer.name,
            expect_d_in=layer.units,
        )  # fmt: skip
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, ValueError) as err:
        raise UserError(str(err).splitlines()[0] if str(err) else repr(err)) from None
    state = {name: t.detach().cpu().clone() for name, t in sae.state_dict().items()}
    fvu = metrics.get("fvu")
    return SAEUnits(
        config=sae_config, state=state, sha256=digest.hexdigest(), path=str(source.resolve()),
        fvu=float(fvu) if isinstance(fvu, int | float) else None,
    )  # fmt: skip


def dissect(
    config: DissectConfig,
    *,
    open_pool: OpenReplicas,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    plan: DissectPlan | None = None,
) -> DissectResult:
    """Run (or reuse) a dissection and store it; `on_batch(done)` is called after every batch.

    `open_pool` starts the model replicas, called only when there is work (the driver,
    `coin_scale.runtime.dissect.run_dissection`, passes replicas on Ray). `plan` (from
    `plan_dissection(config, ...)`) skips planning again."""
    warehouse = Warehouse(config.warehouse)
    plan = plan or plan_dissection(config)
    run_id = config.run_id or new_run_id()
    cached = not config.force and warehouse.has("dissections", plan.dissection_id)
    if cached and (not config.keep_activations or warehouse.fs.exists(activations_file(plan.dissection_id))):
        return _cached_result(warehouse, plan, run_id)
    recorder = RunRecorder(
        warehouse=warehouse, run_id=run_id, command="dissect", model=plan.payload.model_id,
        weights=plan.payload.weights_id, layers=[plan.layer.name], probe=plan.probe.root,
        config=plan.config.to_dict(),
    )  # fmt: skip
    with recorder:  # 'running' now; 'complete', or 'failed' with the error, when it ends
        result = _execute(warehouse, plan, run_id, open_pool, progress=progress, on_batch=on_batch)
        recorder.n_images, recorder.n_failed = result.n_images, result.n_failed
    return result


def replica_work(plan: DissectPlan) -> ReplicaWork:
    """What every replica computes for `plan`: its layer, reduced, through its SAE if any."""
    layer = plan.layer
    return ReplicaWork(
        plan.payload, {layer.name: layer.layout}, (plan.config.reduction,),
        {layer.name: plan.sae} if plan.sae else None,
    )  # fmt: skip


def _execute(
    warehouse: Warehouse,
    plan: DissectPlan,
    run_id: str,
    open_pool: OpenReplicas,
    *,
    progress: bool,
    on_batch: Callable[[int], None] | None,
) -> DissectResult:
    """The probe pass on replicas from `open_pool` (resuming a checkpoint), then the tables."""
    probe, layer = plan.probe, plan.layer
    items = [(im.index, im.path) for im in probe.images]
    state = _start_pass(warehouse, plan, len(items))
    with open_pool(replica_work(plan)) as replicas:
        start = time.perf_counter()
        _probe_pass(warehouse, plan, replicas, items, state, progress=progress, on_batch=on_batch)
        seconds = time.perf_counter() - start
        startup_seconds = replicas.startup_seconds
    acc, failures, dense = state.acc, state.failures, state.dense
    if failures:
        log.warning(
            "%d of %d probe images could not be read and were skipped (status 'unreadable' in "
            "probe_images); first: %s", len(failures), len(items), next(iter(failures.values())),
        )  # fmt: skip
    if acc.moments.count == 0:
        raise UserError(f"none of the {len(items)} images under {probe.root} could be read")
    if dense is not None:
        _save_activations(warehouse, plan.dissection_id, dense)
    _persist(warehouse, plan, run_id, acc, failures, seconds)
    delete_checkpoint(warehouse.fs, plan.dissection_id)
    return DissectResult(
        dissection_id=plan.dissection_id, run_id=run_id, cached=False, model=plan.payload.model_id,
        layer=layer.name, n_images=len(items), n_failed=len(failures), n_units=plan.n_units,
        seconds=seconds, startup_seconds=startup_seconds,
    )  # fmt: skip


def _probe_pass(
    warehouse: Warehouse,
    plan: DissectPlan,
    replicas: BatchRunner,
    items: list[tuple[int, str]],
    state: _PassState,
    *,
    progress: bool,
    on_batch: Callable[[int], None] | None,
) -> None:
    """Every image not yet in `state` through `replicas`, merged into `state` as batches finish
    and checkpointed every few batches or seconds."""
    config, layer = plan.config, plan.layer
    todo = [item for item in items if item[0] not in state.done]
    batches = [todo[i : i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    clock = CheckpointClock(config.checkpoint_batches, config.checkpoint_seconds)
    bar = tqdm(
        total=len(items), initial=len(state.done), unit="img", desc=f"dissect {layer.name}",
        disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    try:
        for done, result in enumerate(replicas.run(batches), start=1):
            state.merge(result, layer.name, config.reduction)
            if clock.merged():
                save_checkpoint(warehouse.fs, state.checkpoint(plan.dissection_id, len(items)))
                clock.written()
            bar.update(len(result.indices) + len(result.failures))
            if result.failures:
                bar.set_postfix(unreadable=len(state.failures))
            if on_batch:
                on_batch(done)
    finally:
        bar.close()


@dataclass
class _PassState:
    """What the probe pass has merged so far: the accumulator, unreadable images, the dense
    activations (when kept) and the image indices done."""

    acc: UnitAccumulator
    failures: dict[int, str]
    dense: np.ndarray | None
    done: set[int]

    def merge(self, result: BatchResult, layer: str, reduction: str) -> None:
        """Merge one replica batch."""
        if len(result.indices):
            matrix = result.activations[layer][reduction]
            self.acc.update(torch.from_numpy(matrix.copy()), torch.from_numpy(result.indices.copy()))
            if self.dense is not None:
                self.dense[result.indices] = matrix
        self.failures.update(dict(result.failures))
        self.done.update(int(i) for i in result.indices)
        self.done.update(int(i) for i, _ in result.failures)

    def checkpoint(self, dissection_id: str, n_images: int) -> DissectCheckpoint:
        return DissectCheckpoint(
            dissection_id=dissection_id, n_images=n_images, done=frozenset(self.done),
            failures=dict(self.failures), accumulator=self.acc.state(), dense=self.dense,
        )  # fmt: skip


def _fresh_pass(plan: DissectPlan, n_images: int) -> _PassState:
    config = plan.config
    acc = UnitAccumulator(plan.n_units, top_k=config.top_k, quantile=config.quantile, n_images=n_images)
    dense = (
        np.full((n_images, plan.n_units), np.nan, dtype=DENSE_DTYPE) if config.keep_activations else None
    )
    return _PassState(acc=acc, failures={}, dense=dense, done=set())


def _start_pass(warehouse: Warehouse, plan: DissectPlan, n_images: int) -> _PassState:
    """A fresh pass state, or the one checkpointed by a killed run of the same dissection
    (unless --force, which starts over), announced on stderr."""
    state = _fresh_pass(plan, n_images)
    if plan.config.force:
        return state
    ckpt = load_checkpoint(
        warehouse.fs, plan.dissection_id, n_images=n_images, need_dense=state.dense is not None
    )
    if ckpt is None:
        return state
    try:
        state.acc.restore(ckpt.accumulator)
    except (KeyError, ValueError) as err:
        log.warning("ignoring the checkpoint of dissection %s: %s", plan.dissection_id, err)
        return _fresh_pass(plan, n_images)
    if state.dense is not None and ckpt.dense is not None:
        state.dense[:] = ckpt.dense
    state.failures.update(ckpt.failures)
    state.done.update(ckpt.done)
    print(
        f"resuming dissection {plan.dissection_id}: {len(ckpt.done)}/{n_images} images already done",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    return state


DENSE_DTYPE = np.float32
"""The dense matrix's type. float32, not float16: units of large models (a randomly initialised
resnet152's layer4 among them) fire far above float16's 65,504, which would turn into inf and
leave the explainers nothing to read. 1,000 images x 2,048 units is 8 MB."""


def activations_file(dissection_id: str) -> str:
    """Where, relative to the warehouse, a dissection's dense (image, unit) float32 activations
    are kept (NaN: unreadable). The name says the type: a float16 file of an earlier version
    (`<id>.npy`) is not read, so the probe pass runs again once instead."""
    return f"_cache/activations/{dissection_id}.f32.npy"


def load_activations(warehouse: Warehouse, dissection_id: str) -> np.ndarray:
    """The dense float32 activations stored by a dissection run with keep_activations (any
    warehouse URI)."""
    fs = warehouse.fs
    with fs.fs.open_input_file(fs.path(activations_file(dissection_id))) as handle:
        return np.load(handle).astype(DENSE_DTYPE, copy=False)


def _save_activations(warehouse: Warehouse, dissection_id: str, dense: np.ndarray) -> None:
    """Write the dense activations atomically through the warehouse's filesystem."""

    def write(tmp: str, filesystem: pafs.FileSystem) -> None:
        with filesystem.open_output_stream(tmp) as out:
            np.save(out, dense)

    warehouse.fs.write_atomic(activations_file(dissection_id), write)


def _persist(
    warehouse: Warehouse,
    plan: DissectPlan,
    run_id: str,
    acc: UnitAccumulator,
    failures: dict[int, str],
    seconds: float,
) -> None:
    """Write the tables; the `dissections` row goes last, so its presence means complete."""
    config, model, layer = plan.config, plan.payload.model_id, plan.layer.name
    stats = acc.statistics()
    values, indices = acc.topk.result()
    did = plan.dissection_id
    warehouse.write("probe_images", probe_images_table(plan.probe, failures), key=plan.probe.probe_id)
    kind = plan.unit_kind
    unit_stats = unit_stats_table(did, model, layer, config.reduction, stats)
    warehouse.write("unit_stats", _with_kind(unit_stats, kind), key=did)
    exemplars = exemplars_table(did, model, layer, values, indices, plan.probe)
    warehouse.write("exemplars", _with_kind(exemplars, kind), key=did)
    n = len(plan.probe)
    row = {
        "dissection_id": did, "run_id": run_id, "model": model, "weights": plan.payload.weights_id,
        "layer": layer, "unit_kind": kind, "reduction": config.reduction,
        "top_k": np.int32(config.top_k), "quantile": config.quantile,
        "probe_id": plan.probe.probe_id, "probe_path": plan.probe.root, "n_images": n,
        "n_ok": n - len(failures), "n_failed": len(failures), "n_units": np.int32(plan.n_units),
        "threshold_method": stats.threshold_method, "seconds": seconds,
        "created_at": datetime.now(UTC),
    }  # fmt: skip
    warehouse.write("dissections", pa.Table.from_pylist([row]), key=did)


def _with_kind(table: pa.Table, kind: UnitKind) -> pa.Table:
    """`table` with every row's `kind` set to `kind` (the table builders write 'neuron')."""
    if kind == "neuron":
        return table
    column = table.schema.get_field_index("kind")
    return table.set_column(column, "kind", pa.array([kind] * table.num_rows, pa.string()))


def _cached_result(warehouse: Warehouse, plan: DissectPlan, run_id: str) -> DissectResult:
    found = warehouse.read("dissections", where={"dissection_id": plan.dissection_id}).to_pylist()[-1]
    log.info(
        "reusing cached dissection %s (run %s, %s): same model, weights, layer and probe content; "
        "pass --force to recompute", plan.dissection_id, found["run_id"], found["created_at"],
    )  # fmt: skip
    return DissectResult(
        dissection_id=plan.dissection_id, run_id=found["run_id"], cached=True,
        model=plan.payload.model_id, layer=plan.layer.name, n_images=found["n_images"],
        n_failed=found["n_failed"], n_units=found["n_units"], seconds=0.0,
    )  # fmt: skip
