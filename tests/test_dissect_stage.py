"""The dissection stage without Ray: `dissect` takes its replicas from the caller (`open_pool`),
so an in-process `ReplicaCore` gives the same exemplars as the Ray pipeline's reference, and a
dissection already in the warehouse opens no replicas at all."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
import torch

from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.pipeline import dissect
from coin_scale.models.batches import Batch, BatchResult, MapsResult, ReplicaWork, UnitMapsResult
from coin_scale.models.replica_core import ReplicaCore
from coin_scale.models.unit_maps import UnitMapsRequest
from tests.test_dissect_cli import exemplar_tensors, reference_top5


class InProcessReplicas:
    """One `ReplicaCore` in this process, as a `BatchRunner` (batches run in order)."""

    startup_seconds = 0.0

    def __init__(self, work: ReplicaWork) -> None:
        self.core = ReplicaCore(
            work.payload, dict(work.layers), list(work.reductions), device="cpu",  # type: ignore[arg-type]
            unit_transforms=work.unit_transforms,
        )  # fmt: skip

    def run(self, batches: Sequence[Batch]) -> Iterator[BatchResult]:
        return (self.core.run(i, batch) for i, batch in enumerate(batches))

    def run_maps(self, batches: Sequence[Batch], layer: str) -> Iterator[MapsResult]:
        return (self.core.run_maps(i, batch, layer) for i, batch in enumerate(batches))

    def run_unit_maps(
        self, batches: Sequence[Batch], requests: Sequence[UnitMapsRequest]
    ) -> Iterator[UnitMapsResult]:
        return (self.core.run_unit_maps(i, batch, requests) for i, batch in enumerate(batches))


def test_dissect_runs_on_the_replicas_it_is_given_and_reuses_a_stored_result(probe_dir, tmp_path):
    opened: list[ReplicaWork] = []

    @contextmanager
    def in_process(work: ReplicaWork) -> Iterator[InProcessReplicas]:
        opened.append(work)
        yield InProcessReplicas(work)

    warehouse = str(tmp_path / "wh")
    config = DissectConfig(
        model="resnet18", weights="none", layer="layer4", probe=str(probe_dir),
        warehouse=warehouse, top_k=5, batch_size=8,
    )  # fmt: skip
    result = dissect(config, open_pool=in_process, progress=False)
    assert (result.cached, result.n_units, result.n_images, result.n_failed) == (False, 512, 37, 1)
    (work,) = opened
    assert dict(work.layers) == {"layer4": "nchw"} and tuple(work.reductions) == ("max",)
    assert work.unit_transforms is None

    want_values, want_indices, _ = reference_top5(probe_dir)
    got_values, got_indices = exemplar_tensors(warehouse)
    torch.testing.assert_close(got_values, want_values, rtol=1e-4, atol=1e-4)
    assert torch.equal(got_indices, want_indices)

    def no_replicas(work: ReplicaWork) -> InProcessReplicas:
        pytest.fail("a stored dissection must not start replicas")

    again = dissect(config, open_pool=no_replicas, progress=False)  # type: ignore[arg-type]
    assert again.cached and again.dissection_id == result.dissection_id


def test_a_dissection_that_fails_leaves_a_failed_run_row(probe_dir, tmp_path):
    """The `runs` row is 'running' once the replicas are asked for, and 'failed' with the error
    when they cannot be started; the error propagates."""
    from coin_scale.storage import Warehouse

    warehouse = Warehouse(tmp_path / "wh")
    statuses: list[str] = []

    @contextmanager
    def dead(work: ReplicaWork) -> Iterator[InProcessReplicas]:
        statuses.extend(warehouse.read("runs").column("status").to_pylist())
        raise RuntimeError("no GPU left\nfor the replicas")
        yield  # pragma: no cover

    config = DissectConfig(
        model="resnet18", weights="none", layer="layer4", probe=str(probe_dir),
        warehouse=str(tmp_path / "wh"), top_k=5, batch_size=8, run_id="dead-run",
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="no GPU left"):
        dissect(config, open_pool=dead, progress=False)
    assert statuses == ["running"]
    (run,) = warehouse.read("runs").to_pylist()
    assert (run["run_id"], run["command"], run["status"], run["message"]) == (
        "dead-run", "dissect", "failed", "RuntimeError: no GPU left for the replicas",
    )  # fmt: skip
    assert run["finished_at"] is not None and run["n_images"] is None
    assert warehouse.read("dissections").num_rows == 0
