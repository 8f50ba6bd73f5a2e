"""`dissect` on Ray: the stage `coin_scale.dissect.pipeline.dissect` with its model replicas
started on the Ray cluster at `config.address` (`config.replicas` of them), only when the
dissection is not already in the warehouse."""

from __future__ import annotations

from collections.abc import Callable

from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.pipeline import DissectPlan, DissectResult, dissect
from coin_scale.runtime.pools import replica_opener


def run_dissection(
    config: DissectConfig,
    *,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    plan: DissectPlan | None = None,
) -> DissectResult:
    """Run (or reuse) a dissection and store it; `on_batch(done)` is called after every batch.

    `plan` (from `plan_dissection(config, ...)`) skips planning again."""
    open_pool = replica_opener(address=config.address, replicas=config.replicas)
    return dissect(config, open_pool=open_pool, progress=progress, on_batch=on_batch, plan=plan)
