"""Inside `keep_ray` (a sweep, `coin-scale dissect`), a replica pool whose stage ended is parked and
handed to the next stage that asks for the same work, instead of a fresh process importing torch
and building the model again; it is shut down as soon as something else needs its cores, when a
stage fails, and when the block ends."""

from __future__ import annotations

import pytest

from coin_scale.models.batches import ReplicaWork
from coin_scale.models.loading import resolve_model
from coin_scale.models.payload import ModelSource
from coin_scale.runtime import pools
from tests.actor_deaths import wait_until_dead


@pytest.fixture(scope="module")
def payload():
    return resolve_model(ModelSource(model="resnet18", weights="none"))


def _work(payload, reduction: str = "max") -> ReplicaWork:
    return ReplicaWork(payload, {"layer4": "nchw"}, (reduction,), None)


def _pids(pool) -> list[int]:
    import ray

    return ray.get([actor.pid.remote() for actor in pool.actors])


def _dead(pool) -> None:
    for actor in pool.actors:
        wait_until_dead(actor.pid.remote)


def test_the_next_stage_with_the_same_work_gets_the_same_replicas(ray_cluster, payload):
    from coin_scale.actors.render_batches import RenderPoolConfig

    starts = pools.REPLICA_POOL_STARTS[0]
    with pools.keep_ray():
        with pools.replica_pool(_work(payload), address=None, replicas=None) as first:
            pids = _pids(first)
        assert pools._parked  # kept for the next stage
        # Same model, layer and reduction (a new but equal payload object): the same processes.
        again = resolve_model(ModelSource(model="resnet18", weights="none"))
        with pools.replica_pool(_work(again), address=None, replicas=None) as second:
            assert second is first and _pids(second) == pids
        assert pools.REPLICA_POOL_STARTS[0] - starts == 1

        # Other work: the parked pool goes before the new one is placed on its cores.
        with pools.replica_pool(_work(payload, "mean"), address=None, replicas=None) as other:
            _dead(first)
            assert other is not first
        assert pools.REPLICA_POOL_STARTS[0] - starts == 2

        # Render workers that reserve a CPU each: the parked pool makes room for them.
        # (Left parked, it would hold both of this machine's CPUs and the worker could not start.)
        with pools.render_pool(RenderPoolConfig(workers=1, cpus_each=1.0), address=None):
            _dead(other)
            assert not pools._parked

        with pools.replica_pool(_work(payload), address=None, replicas=None) as last:
            pass
        assert pools._parked
    # The block's end shuts the parked pool down.
    assert not pools._parked
    _dead(last)


def test_a_pool_whose_stage_failed_is_not_parked(ray_cluster, payload):
    with pools.keep_ray():
        with (
            pytest.raises(RuntimeError, match="the stage broke"),
            pools.replica_pool(_work(payload), address=None, replicas=None) as pool,
        ):
            raise RuntimeError("the stage broke")
        assert not pools._parked
        _dead(pool)


def test_outside_keep_ray_a_pool_is_shut_down_on_exit(ray_cluster, payload):
    with pools.replica_pool(_work(payload), address=None, replicas=None) as pool:
        assert len(_pids(pool)) == 1
    assert not pools._parked
    _dead(pool)
