"""The cluster's rate-limiter actor and the gateway's `RemoteLimiter` over it: a reply's real
token count rides on the gateway's next reservation (one actor call per request), and reaches
the limiter on its own when no reservation follows."""

from __future__ import annotations

import asyncio

import ray

from coin_scale.actors.rate_limiter import RateLimiterActor, RemoteLimiter
from coin_scale.llm.ratelimit import RateLimits

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
