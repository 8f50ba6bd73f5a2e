"""The pools' one dispatch loop on the shared local Ray cluster, with trivial actors: items lost
with a dead actor go to a live one, each answered once; an item's tries are bounded; a task's
own error is not resubmitted. (The pools themselves are killed mid-work in test_render_pool,
test_gateway_pool, test_dissect_cli and test_multinode_faults.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.actor_deaths import wait_until_dead

pytestmark = pytest.mark.slow


def _actors(ray: Any, n: int) -> list[Any]:
    @ray.remote(num_cpus=0, max_restarts=0)
    class Doubler:
        def double(self, x: int) -> int:
            if x < 0:
                raise ValueError(f"negative: {x}")
            return 2 * x

    actors = [Doubler.remote() for _ in range(n)]
    ray.get([a.double.remote(0) for a in actors])  # all started
    return actors


def _kill(ray: Any, actor: Any) -> None:
    """Kill `actor` and wait until it is dead."""
    ray.kill(actor, no_restart=True)
    wait_until_dead(lambda: actor.double.remote(0))


@pytest.mark.timeout(120)
def test_stream_resubmits_what_a_dead_actor_lost_and_answers_each_item_once(ray_cluster):
    from coin_scale.actors.dispatch import Dispatcher

    actors = _actors(ray_cluster, 2)
    _kill(ray_cluster, actors[1])
    dispatch = Dispatcher(actors, kind="doubler", max_attempts=3, in_flight_each=2)
    lost: list[int] = []
    done = list(
        dispatch.stream(12, lambda a, i: a.double.remote(i), on_lost=lambda i, _e: lost.append(i))
    )
    assert sorted(d.item for d in done) == list(range(12))
    assert all(d.value == 2 * d.item and d.slot == 0 for d in done)
    assert dispatch.resubmitted == len(lost) >= 1
    assert dispatch.health.load == [0, 0] and dispatch.health.failures[1] >= 1


@pytest.mark.timeout(120)
def test_an_item_lost_max_attempts_times_raises_and_frees_its_slots(ray_cluster):
    from coin_scale.actors.dispatch import Dispatcher

    (actor,) = _actors(ray_cluster, 1)
    _kill(ray_cluster, actor)
    dispatch = Dispatcher([actor], kind="doubler", max_attempts=2, in_flight_each=2)
    with pytest.raises(RuntimeError, match=r"item \d failed on 2 attempts"):
        list(dispatch.stream(3, lambda a, i: a.double.remote(i)))
    assert dispatch.health.load == [0]
    with pytest.raises(RuntimeError, match="call 7 failed on 2 attempts"):
        asyncio.run(dispatch.call(lambda a: a.double.remote(7), what="call 7"))


@pytest.mark.timeout(120)
def test_call_fails_over_and_a_task_error_is_not_resubmitted(ray_cluster):
    from ray.exceptions import RayTaskError

    from coin_scale.actors.dispatch import Dispatcher

    actors = _actors(ray_cluster, 2)
    _kill(ray_cluster, actors[0])
    dispatch = Dispatcher(actors, kind="doubler", max_attempts=3)

    async def calls() -> list[int]:
        return list(
            await asyncio.gather(
                *(dispatch.call(lambda a, i=i: a.double.remote(i), what=f"{i}") for i in range(6))
            )
        )

    assert asyncio.run(calls()) == [0, 2, 4, 6, 8, 10]
    assert dispatch.resubmitted >= 1 and dispatch.health.load == [0, 0]
    before = dispatch.resubmitted
    with pytest.raises(RayTaskError, match="negative: -1"):
        asyncio.run(dispatch.call(lambda a: a.double.remote(-1), what="bad"))
    with pytest.raises(ValueError, match="negative: -2"):
        list(
            Dispatcher(actors[1:], kind="d", max_attempts=2).stream(
                1, lambda a, i: a.double.remote(-2)
            )
        )
    assert dispatch.resubmitted == before
