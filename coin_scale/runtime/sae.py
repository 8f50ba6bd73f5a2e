"""`train-sae` on Ray: the stage `coin_scale.sae.pipeline.train_sae_on_probe` with the model
replicas of its activation pass started on the Ray cluster at `request.address`, only when the
activation cache is not already full."""

from __future__ import annotations

from coin_scale.runtime.pools import replica_opener
from coin_scale.sae.pipeline import TrainSAERequest, TrainSAEResult, train_sae_on_probe


def run_train_sae(request: TrainSAERequest, *, progress: bool = True) -> TrainSAEResult:
    """Plan, fill (or reuse) the activation cache on Ray, train, measure the replacement, save."""
    open_pool = replica_opener(address=request.address, replicas=request.replicas)
    return train_sae_on_probe(request, open_pool=open_pool, progress=progress)
