"""GatewayPool on the shared local Ray cluster against a real fake OpenAI server on 127.0.0.1: a
gateway actor SIGKILLed while calls are in flight loses no call and no ledger row."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from dataclasses import dataclass

import pytest

from coin_scale.llm.gateway import CallMeta, GatewayConfig
from coin_scale.llm.messages import ChatRequest, Message
from coin_scale.llm.ratelimit import RateLimits
from coin_scale.llm.retry import RetryPolicy
from coin_scale.llm.settings import Price
from coin_scale.testing.fakeserver import FakeProviderServer, Faults
from coin_scale.testing.policy import Action, ConversationView, Reply

pytestmark = pytest.mark.slow
KEY = "sk-test-gateway-pool"


@dataclass(frozen=True)
class Echo:
    """Answers every request with its last user text, so each reply names its request."""

    def __call__(self, view: ConversationView) -> Action:
        return Reply(text=f"echo: {view.user_texts[-1]}")


def _requests(n: int) -> list[ChatRequest]:
    return [
        ChatRequest(system="You explain units.", messages=(Message(role="user", text=f"unit {i}"),))
        for i in range(n)
    ]


@pytest.mark.timeout(180)
def test_a_gateway_actor_killed_mid_call_loses_no_call_and_no_ledger_row(ray_cluster, tmp_path):
    from coin_scale.actors.llm_gateway import GatewayPool, GatewaySpec

    requests = _requests(24)
    with FakeProviderServer("openai", Echo(), api_key=KEY, faults=Faults(latency_s=0.3)) as server:
        spec = GatewaySpec(
            config=GatewayConfig(
                provider="openai", model="fake-model", retry=RetryPolicy(max_attempts=2),
                price=Price(input_per_million=1.0, output_per_million=2.0),
                cache_dir=str(tmp_path / "cache"),
            ),
            limits=RateLimits(requests_per_minute=60000, tokens_per_minute=1e12),
            base_url=server.base_url,
        )  # fmt: skip
        pool = GatewayPool(spec, KEY, actors=2)
        try:
            victim = pool.pids()[0]

            def kill_when_busy() -> None:  # the first answers are back, the rest in flight
                deadline = time.monotonic() + 30
                while len(server.log) < 4 and time.monotonic() < deadline:
                    time.sleep(0.01)
                os.kill(victim, signal.SIGKILL)

            killer = threading.Thread(target=kill_when_busy)
            killer.start()

            async def all_calls() -> list:  # type: ignore[type-arg]
                meta = [
                    CallMeta(run_id="r", layer="l", unit=i, round=0) for i in range(len(requests))
                ]
                return list(
                    await asyncio.gather(
                        *(pool.complete(r, m) for r, m in zip(requests, meta, strict=True))
                    )
                )

            replies = asyncio.run(all_calls())
            killer.join()
            rows = pool.ledger()
            pids = pool.pids()
        finally:
            pool.shutdown()
        log = server.log

    assert [r.response.text for r in replies] == [f"echo: unit {i}" for i in range(24)]
    assert pool.resubmitted >= 1  # the killed actor's calls were sent again
    assert pids[0] != victim  # Ray restarted it
    # One ledger row per call, from both actors, none lost with the dead one.
    assert sorted(row.unit for row in rows) == list(range(24))
    assert {row.status for row in rows} <= {"ok", "cached"}
    # Paid twice at most: the calls in flight on the killed actor.
    assert len(log) <= 24 + pool.resubmitted
    assert {v.user_texts[-1] for v in (r.view for r in log) if v} == {
        f"unit {i}" for i in range(24)
    }


def test_a_pool_needs_at_least_one_attempt() -> None:
    from coin_scale.actors.llm_gateway import GatewayPool

    with pytest.raises(ValueError, match="max_attempts"):
        GatewayPool(None, KEY, max_attempts=0)  # type: ignore[arg-type]
