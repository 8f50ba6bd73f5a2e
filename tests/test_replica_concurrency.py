"""A model replica's two calls at once, without Ray: on a CPU their forward passes run side by
side (each with its share of the cores) and each gets exactly its own activations and maps,
while a `ModuleCall` (which may hook the module) waits for them and runs alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from coin_scale.bench.images import write_synthetic_images
from coin_scale.models import ModelSource, resolve_model
from coin_scale.models.loading import ModelPayload
from coin_scale.models.replica_core import (
    ReplicaCore,
    SharedExclusiveLock,
    call_threads,
)
from coin_scale.models.unit_maps import UnitMapsRequest


def _payload() -> ModelPayload:
    return resolve_model(ModelSource(model="resnet18", weights="none", seed=1))


def test_forward_passes_side_by_side_get_their_own_activations(tmp_path) -> None:
    write_synthetic_images(tmp_path, 48, size=(80, 60), seed=2, classes=2)
    paths = sorted(str(p) for p in tmp_path.rglob("*.jpg"))
    batches = [list(enumerate(paths[i : i + 8], i)) for i in range(0, len(paths), 8)]
    core = ReplicaCore(_payload(), {"layer3": "nchw", "layer4": "nchw"}, ("max",), threads=2)
    assert core.forward_threads == 1 and core.threads == 2
    alone = {b[0][0]: core.run(k, b).activations for k, b in enumerate(batches)}
    request = UnitMapsRequest("layer4", "nchw", (3, 1))
    maps_alone = {b[0][0]: core.run_unit_maps(k, b, [request]).maps for k, b in enumerate(batches)}
    with ThreadPoolExecutor(2) as pool:  # as the actor runs them: two at once
        together = list(pool.map(lambda kb: core.run(*kb), enumerate(batches)))
        maps_together = list(
            pool.map(lambda kb: core.run_unit_maps(kb[0], kb[1], [request]), enumerate(batches))
        )
    for result in together:
        first = int(result.indices[0])
        for layer in ("layer3", "layer4"):
            np.testing.assert_allclose(
                result.activations[layer]["max"], alone[first][layer]["max"], rtol=1e-4, atol=1e-5
            )
    for result in maps_together:
        first = int(result.indices[0])
        np.testing.assert_allclose(result.maps["layer4"], maps_alone[first]["layer4"], rtol=1e-4,
                                   atol=1e-5)  # fmt: skip


def test_an_exclusive_holder_waits_for_the_shared_ones_and_keeps_new_ones_out() -> None:
    lock = SharedExclusiveLock()
    events: list[str] = []
    inside = threading.Event()

    def shared(name: str, hold: float) -> None:
        with lock.shared():
            events.append(f"{name} in")
            inside.set()
            time.sleep(hold)
            events.append(f"{name} out")

    def exclusive() -> None:
        with lock.exclusive():
            events.append("exclusive")

    first = threading.Thread(target=shared, args=("a", 0.3))
    first.start()
    inside.wait()
    writer = threading.Thread(target=exclusive)
    writer.start()
    time.sleep(0.05)
    late = threading.Thread(target=shared, args=("b", 0.0))  # arrives while the writer waits
    late.start()
    for t in (first, writer, late):
        t.join()
    assert events == ["a in", "a out", "exclusive", "b in", "b out"]


def test_threads_per_call() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert call_threads(cpu, 2) == 1 and call_threads(cpu, 16) == 8 and call_threads(cpu, 1) == 1
    assert call_threads(gpu, 16) == 16 and call_threads(cpu, None) is None
