"""The cluster's rate-limiter actor and the gateway's `RemoteLimiter` over it: a reply's real
token count rides on the gateway's next reservation (one actor call per request), and reaches
the limiter on its own when no reservation follows."""

from __future__ import annotations

import asyncio

import pytest
import ray
from ray.exceptions import RayActorError

from coin_scale.actors.rate_limiter import RateLimiterActor, RemoteLimiter
from coin_scale.llm.ratelimit import RateLimits
from tests.actor_deaths import wait_until_dead

LIMITS = RateLimits(requests_per_minute=6000, tokens_per_minute=1_000_000)


def test_settlements_ride_on_the_next_reservation_or_are_flushed(ray_cluster) -> None:
    actor = RateLimiterActor.remote()  # a private one, not the cluster's named limiter

    async def story() -> list[float]:
        remote = RemoteLimiter(actor, "openai|m|default", LIMITS, flush_s=0.3)
        seen = []
        _, start = await remote.reserve(600)
        await remote.settle(600, 100, start)  # the reply used 100 of the 600 booked
        seen.append(await actor.booked_tokens.remote(remote.key))  # not sent yet: 600
        _, start2 = await remote.reserve(400)  # carries the settlement
        seen.append(await actor.booked_tokens.remote(remote.key))  # 100 + 400
        await remote.settle(400, 50, start2)
        await asyncio.sleep(0.6)  # no reservation follows: flushed on its own
        seen.append(await actor.booked_tokens.remote(remote.key))  # 100 + 50
        return seen

    assert asyncio.run(story()) == [600.0, 500.0, 150.0]
    ray.kill(actor)


def test_the_actor_applies_a_batch_of_settlements_and_ignores_unknown_keys(ray_cluster) -> None:
    actor = RateLimiterActor.remote()
    _, a = ray.get(actor.reserve.remote("k", LIMITS, 300))
    _, b = ray.get(actor.reserve.remote("k", LIMITS, 300))
    ray.get(actor.settle_many.remote("k", [(300, 10, a), (300, 20, b)]))
    assert ray.get(actor.booked_tokens.remote("k")) == 30.0
    ray.get(actor.settle_many.remote("unknown", [(300, 10, a)]))  # nothing booked: no error
    assert ray.get(actor.booked_tokens.remote("unknown")) == 0.0
    ray.kill(actor)


def test_reservations_made_meanwhile_go_together_in_their_order(ray_cluster) -> None:
    actor = RateLimiterActor.remote()
    paced = RateLimits(requests_per_minute=600)  # one request every 0.1 s

    async def story() -> tuple[list[tuple[float, float]], int]:
        remote = RemoteLimiter(actor, "openai|m|default", paced)
        booked = await asyncio.gather(*(remote.reserve(10) for _ in range(12)))
        return booked, remote.actor_calls

    booked, calls = asyncio.run(story())
    starts = [start for _, start in booked]
    assert calls < 12  # all twelve were waiting at once: one or two calls carried them
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == pytest.approx([0.1] * 11)  # paced, in the order they were made
    waits = [wait for wait, _ in booked]
    assert waits[0] == pytest.approx(0.0, abs=0.05) and waits[-1] == pytest.approx(1.1, abs=0.05)
    ray.kill(actor)


def test_every_waiting_reservation_gets_the_actors_failure(ray_cluster) -> None:
    actor = RateLimiterActor.remote()
    ray.get(actor.booked_tokens.remote("k"))  # started
    ray.kill(actor)
    wait_until_dead(lambda: actor.booked_tokens.remote("k"))

    async def story() -> list[BaseException | tuple[float, float]]:
        remote = RemoteLimiter(actor, "k", LIMITS)
        return await asyncio.gather(*(remote.reserve(1) for _ in range(3)), return_exceptions=True)

    outcomes = asyncio.run(story())
    assert all(isinstance(o, RayActorError) for o in outcomes)
