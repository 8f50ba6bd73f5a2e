"""The sweep's spatial evidence: every explained unit's activation map on the exemplars its card
shows and on the target image, attached to its finding for the report and stored in
`activation_maps`, with the threshold its masked exemplars are cut at.

After the probe pass, one forward pass a batch on the model replicas
(`ReplicaCore.run_unit_maps`, through the layer's SAE when its units are features) gives the
units' maps on the union of their exemplar images (every explained layer's at once) and of
`THRESHOLD_IMAGES` probe images drawn at random. A unit's threshold is MAIA's (after NetDissect):
the top quantile of its activations over every position of its maps on those drawn images. The
target goes through the sweep's model replica (`ReplicaModel`), by the same `capture_unit_maps`. A layer with no spatial extent (one vector per image) gets a note instead.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from coin_scale.models.batches import Batch, ReplicaWork
from coin_scale.models.layers import LayerInfo
from coin_scale.models.module_call import ModuleCall
from coin_scale.models.unit_maps import SPATIAL_LAYOUTS, UnitMapsRequest, target_unit_maps
from coin_scale.probe import ProbeSet
from coin_scale.storage import Warehouse, get_spec
from coin_scale.sweep.records import ActivationMap, Exemplar, UnitFinding, UnitThreshold
from coin_scale.sweep.state import SweepState

log = logging.getLogger(__name__)

MAPS_BATCH = 32
"""Images per replica call."""
THRESHOLD_QUANTILE = 0.99
"""A unit fires at the positions above this quantile of its activations (its top 1%)."""
THRESHOLD_IMAGES = 64
"""Probe images drawn at random (seeded by the sweep's seed) whose positions the quantile is
over; all of them when the probe has fewer."""

MapKey = tuple[str, int, str]
"""(layer, unit, image path)."""
ImageMaps = dict[int, dict[str, np.ndarray]]
"""{image index: {layer: float32 (unit, height, width)}}, units in their request's order."""


@dataclass(frozen=True, slots=True)
class ExemplarRef:
    """One exemplar a card shows, as the dissection stored it."""

    dissection_id: str
    layer: str
    unit: int
    kind: str
    rank: int
    image_index: int
    image_path: str


def map_findings(state: SweepState) -> None:
    """Compute, attach and store the maps of the sweep's explained units (see the module)."""
    i, config = state.inputs, state.config
    layers = {c.name: c for c in i.chain}
    findings = [*state.positive, *state.negative, *state.nodes]
    explained = [f for f in findings if f.status is not None and f.layer in state.dissection_ids]
    flat = {f.layer for f in explained if layers[f.layer].layout not in SPATIAL_LAYOUTS}
    for name in sorted(flat):
        state.notes.append(
            f"{name} outputs one vector per image (no spatial extent): its units have no "
            "activation maps, so their cards show no masked exemplars or heat map."
        )
    requests = maps_requests(explained, layers)
    if not requests or state.probe is None:
        return
    ids = {r.layer: state.dissection_ids[r.layer] for r in requests}
    refs = exemplar_refs(i.warehouse, ids, requests, shown=config.probe.exemplars)
    sample = threshold_sample(state.probe, THRESHOLD_IMAGES, seed=config.target.seed)
    images = sorted({(x.image_index, x.image_path) for x in refs} | set(sample))
    ran = _replica_maps(state, images, requests)
    thresholds = spatial_thresholds(ran, [k for k, _ in sample], requests, THRESHOLD_QUANTILE)
    exemplar_maps = {
        (x.layer, x.unit, x.image_path): ran[x.image_index][x.layer][_col(requests, x)]
        for x in refs
        if x.image_index in ran
    }
    sae = i.sae_model if i.sae_model is not None and i.layer.name in ids else None
    pixels, _ = state.attributed()
    captured = i.runner(ModuleCall.of(target_unit_maps, pixels, requests, sae, i.layer.name))
    target = {
        (r.layer, unit, state.image_path): captured[r.layer][0, k].numpy()
        for r in requests
        for k, unit in enumerate(r.units)
    }
    crop = i.payload.preprocess.crop / i.payload.preprocess.resize
    attach = {k: _record(m, crop) for k, m in (exemplar_maps | target).items()}

    def mapped(fs: list[UnitFinding]) -> list[UnitFinding]:
        return [with_maps(f, attach, thresholds, state.image_path) for f in fs]

    state.positive, state.negative = mapped(state.positive), mapped(state.negative)
    state.nodes = mapped(state.nodes)
    rows = map_rows(refs, exemplar_maps, target, thresholds, state.image_path, ids,
                    run_id=i.run_id, model=i.payload.model_id)  # fmt: skip
    i.warehouse.write("activation_maps", get_spec("activation_maps").from_dicts(rows), key=i.run_id)


def maps_requests(
    findings: Iterable[UnitFinding], layers: Mapping[str, LayerInfo]
) -> list[UnitMapsRequest]:
    """One request per layer with spatial units among `findings`: its units, in order, once."""
    units: dict[str, dict[int, None]] = {}
    for f in findings:
        if layers[f.layer].layout in SPATIAL_LAYOUTS:
            units.setdefault(f.layer, {})[f.unit] = None
    return [UnitMapsRequest(name, layers[name].layout, tuple(us)) for name, us in units.items()]


def exemplar_refs(
    warehouse: Warehouse,
    dissection_ids: Mapping[str, str],
    requests: Sequence[UnitMapsRequest],
    *,
    shown: int,
) -> list[ExemplarRef]:
    """The first `shown` exemplars of every requested unit, from its layer's dissection."""
    refs = []
    fields = ("unit", "kind", "rank", "image_index", "image_path")
    for r in requests:
        did, wanted = dissection_ids[r.layer], set(r.units)
        for row in warehouse.read("exemplars", where={"dissection_id": did}).to_pylist():
            if row["unit"] in wanted and row["rank"] < shown:
                refs.append(
                    ExemplarRef(dissection_id=did, layer=r.layer, **{k: row[k] for k in fields})
                )
    return sorted(refs, key=lambda x: (x.layer, x.unit, x.rank))


def threshold_sample(probe: ProbeSet, n: int, *, seed: int) -> list[tuple[int, str]]:
    """`n` (index, path) probe images drawn without replacement by `seed` (all when fewer)."""
    items = [(im.index, im.path) for im in probe.images]
    return sorted(random.Random(seed).sample(items, min(n, len(items))))


def spatial_thresholds(
    maps: ImageMaps, sample: Sequence[int], requests: Sequence[UnitMapsRequest], quantile: float
) -> dict[tuple[str, int], UnitThreshold]:
    """Every requested unit's `quantile` of its activations over every position of its maps on
    the `sample` images that ran (a unit with none gets no threshold)."""
    ran = [k for k in sample if k in maps]
    out = {}
    for r in requests:
        if not ran:
            continue
        stacked = np.stack([maps[k][r.layer] for k in ran])  # (image, unit, height, width)
        for col, unit in enumerate(r.units):
            value = float(np.quantile(stacked[:, col].astype(np.float64), quantile))
            out[(r.layer, unit)] = UnitThreshold(value=value, quantile=quantile, images=len(ran))
    return out


def with_maps(
    f: UnitFinding,
    maps: Mapping[MapKey, ActivationMap],
    thresholds: Mapping[tuple[str, int], UnitThreshold],
    target_path: str,
) -> UnitFinding:
    """`f` with its exemplars' maps, its map on the target and its threshold (those it has)."""
    exemplars = tuple(
        replace(x, activation_map=maps.get((f.layer, f.unit, x.image_path))) for x in f.exemplars
    )
    target = maps.get((f.layer, f.unit, target_path))
    return replace(
        f, exemplars=exemplars, threshold=thresholds.get((f.layer, f.unit)),
        target_map=None if target is None else Exemplar(
            image_path=target_path, activation=max(target.values), label="target",
            activation_map=target,
        ),
    )  # fmt: skip


def map_rows(
    refs: Sequence[ExemplarRef],
    exemplar_maps: Mapping[MapKey, np.ndarray],
    target_maps: Mapping[MapKey, np.ndarray],
    thresholds: Mapping[tuple[str, int], UnitThreshold],
    target_path: str,
    dissection_ids: Mapping[str, str],
    *,
    run_id: str,
    model: str,
) -> list[dict[str, Any]]:
    """`activation_maps` rows: the exemplars' that ran, then the target's."""
    kinds = {(x.layer, x.unit): x.kind for x in refs}
    rows = []

    def row(layer: str, unit: int, m: np.ndarray, **image: Any) -> dict[str, Any]:
        return {
            "run_id": run_id, "dissection_id": dissection_ids[layer], "model": model, "layer": layer,
            "kind": kinds.get((layer, unit), "neuron"), "unit": unit, **image,
            "height": m.shape[0], "width": m.shape[1],
            "activation_map": m.astype(np.float32).ravel().tolist(),
            **_threshold_columns(thresholds.get((layer, unit))),
        }  # fmt: skip

    for x in refs:
        m = exemplar_maps.get((x.layer, x.unit, x.image_path))
        if m is not None:
            rows.append(row(x.layer, x.unit, m, image_role="exemplar", rank=x.rank,
                            image_index=x.image_index, image_path=x.image_path))  # fmt: skip
    for (layer, unit, _), m in target_maps.items():
        rows.append(row(layer, unit, m, image_role="target", rank=None, image_index=None,
                        image_path=target_path))  # fmt: skip
    return rows


def _replica_maps(
    state: SweepState, images: Sequence[tuple[int, str]], requests: Sequence[UnitMapsRequest]
) -> ImageMaps:
    """Every requested unit's map on every image, one replica pass over them, by image index."""
    from coin_scale.runtime.pools import replica_pool

    i, config = state.inputs, state.config
    batches: list[Batch] = [
        list(images[k : k + MAPS_BATCH]) for k in range(0, len(images), MAPS_BATCH)
    ]
    layers = {r.layer: r.layout for r in requests}
    sae = {i.layer.name: i.sae} if i.sae is not None and i.layer.name in layers else None
    work = ReplicaWork(i.payload, layers, ("max",), sae)
    paths = dict(images)
    out: ImageMaps = {}
    failed: list[str] = []
    with replica_pool(work, address=config.run.address, replicas=None) as pool:
        bar = tqdm(total=len(images), unit="img", desc="activation maps",
                   disable=not config.run.progress, dynamic_ncols=True)  # fmt: skip
        try:
            for result in pool.run_unit_maps(batches, requests):
                for row, index in enumerate(result.indices):
                    out[int(index)] = {layer: m[row] for layer, m in result.maps.items()}
                failed += [f"{paths[index]} ({reason})" for index, reason in result.failures]
                bar.update(len(result.indices) + len(result.failures))
        finally:
            bar.close()
    if failed:  # unreadable probe images, already counted by the dissection
        log.info("no activation maps for %d unreadable image(s): %s", len(failed), failed[0])
    return out


def _threshold_columns(t: UnitThreshold | None) -> dict[str, Any]:
    if t is None:
        return {"threshold": None, "threshold_quantile": None, "threshold_images": 0}
    return {"threshold": t.value, "threshold_quantile": t.quantile, "threshold_images": t.images}


def _col(requests: Sequence[UnitMapsRequest], x: ExemplarRef) -> int:
    return next(r.units.index(x.unit) for r in requests if r.layer == x.layer)


def _record(m: np.ndarray, crop_fraction: float) -> ActivationMap:
    return ActivationMap(
        height=int(m.shape[0]), width=int(m.shape[1]),
        values=tuple(float(v) for v in m.ravel()), crop_fraction=crop_fraction,
    )  # fmt: skip
