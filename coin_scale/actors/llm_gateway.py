"""The LLM gateway actors: async actors that hold the provider clients (and their keys, in memory
only) and call the core `coin_scale.llm.gateway.Gateway`, booking their requests with the
cluster's shared rate limiter (`coin_scale.actors.rate_limiter`).

`GatewayPool` survives the death of a gateway actor: Ray restarts it (`max_restarts`), and the
calls it had in flight are resubmitted to a live actor through the pools' one dispatch loop
(`coin_scale.actors.dispatch`: bounded attempts, the dead one rests for a doubling backoff); the
ledger is kept on the driver from the replies, so the rows of the calls a dead actor answered are
not lost with it.

Each image's bytes cross Ray once per actor: the pool sends the images an actor acknowledged as
ref parts, the actor fills them from its `ImageStore` (`coin_scale.llm.image_store`), and one
that lost them (restarted, or evicted them) answers `MissingImages`, on which the pool resends
the full request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from coin_scale.actors.dispatch import ACTOR_LOST, DispatchedPool, Dispatcher, task_cause
from coin_scale.actors.rate_limiter import RemoteLimiter, shared_rate_limiter
from coin_scale.llm.cache import RequestCache
from coin_scale.llm.gateway import CallMeta, Gateway, GatewayConfig, GatewayFailed, GatewayReply
from coin_scale.llm.image_store import (
    ImageStore,
    KnownDigests,
    MissingImages,
    compact_request,
    image_bytes,
)
from coin_scale.llm.keys import KeyRedactor, redact
from coin_scale.llm.messages import ChatRequest
from coin_scale.llm.providers import make_client
from coin_scale.llm.ratelimit import RateLimits
from coin_scale.storage.schemas import llm_calls

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GatewaySpec:
    """Everything a gateway actor needs except the key."""

    config: GatewayConfig
    limits: RateLimits
    base_url: str | None = None

    @property
    def limiter_key(self) -> str:
        return f"{self.config.provider}|{self.config.model}|{self.base_url or 'default'}"


@ray.remote(num_cpus=0, max_restarts=4, max_task_retries=0)  # type: ignore[call-overload]
class LLMGatewayActor:
    """Holds one provider client; `complete` runs concurrently (an asyncio actor)."""

    def __init__(self, spec: GatewaySpec, api_key: str) -> None:
        KeyRedactor([api_key]).install()
        self._secrets = [api_key]
        client = make_client(spec.config.provider, api_key=api_key, base_url=spec.base_url)
        limiter = RemoteLimiter(shared_rate_limiter(), spec.limiter_key, spec.limits)
        cache = RequestCache(spec.config.cache_dir) if spec.config.cache_dir else None
        self.gateway = Gateway(client, spec.config, limiter, cache)
        self.images = ImageStore()

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """Raises `MissingImages` when the request names images this actor does not hold."""
        request = self.images.expand(request)
        try:
            return await self.gateway.complete(request, meta)
        except GatewayFailed as failed:
            failed.error.args = (redact(str(failed.error), self._secrets),)
            raise GatewayFailed(failed.error, failed.call) from None

    async def drain_ledger(self) -> list[llm_calls.Row]:
        return self.gateway.drain_ledger()

    async def pid(self) -> int:
        """This actor's process id (to find, or kill, it)."""
        return os.getpid()


def _give_up(what: str, attempts: int, err: BaseException) -> BaseException:
    return RuntimeError(
        f"{what} was lost with a gateway actor {attempts} times (last: {type(err).__name__})"
    )


class GatewayPool(DispatchedPool):
    """`actors` gateway actors for one provider and model; each call goes to the least loaded
    live actor, and a call whose actor died is resubmitted to another (up to `max_attempts`)."""

    def __init__(
        self,
        spec: GatewaySpec,
        api_key: str,
        *,
        actors: int = 1,
        max_attempts: int = 6,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`actor_options`: Ray options of the actors (e.g. `resources` to place them)."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts: expected >= 1; got {max_attempts!r}")
        self.spec = spec
        options = dict(actor_options or {})
        handles = [
            LLMGatewayActor.options(**options).remote(spec, api_key)  # type: ignore[attr-defined]
            for _ in range(max(1, actors))
        ]
        self.dispatch = Dispatcher(
            handles, kind="gateway actor", max_attempts=max_attempts, give_up=_give_up
        )
        self.max_attempts = max_attempts
        self._rows: list[llm_calls.Row] = []
        self._known: dict[str, KnownDigests] = {}
        """Per actor (by actor id): the digests of the images it acknowledged."""
        self.image_bytes_sent = 0
        """Image bytes in the requests sent to the actors, resends included: what crossed Ray."""
        self.image_bytes_saved = 0
        """Image bytes left out of the requests as refs to images the actor held."""

    async def complete(self, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """One request; raises `GatewayFailed` (its ledger row is kept), or `RuntimeError` when
        the call was lost with an actor `max_attempts` times."""
        what = f"LLM call of unit {meta.unit} round {meta.round}"
        try:
            reply: GatewayReply = await self.dispatch.call(
                lambda actor: self._send(actor, request, meta), what=what
            )
        except RayTaskError as err:
            cause = err.as_instanceof_cause()
            if isinstance(cause, GatewayFailed):
                self._rows.append(cause.call)
                raise GatewayFailed(cause.error, cause.call) from None
            raise
        self._rows.append(reply.call)
        return reply

    async def _send(self, actor: Any, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        """One attempt on `actor`: the images it acknowledged go as refs. When it no longer holds
        them (`MissingImages`) its memory is forgotten and the full request goes once more; when
        it is lost, its memory is forgotten (a restarted actor holds none) and the loss raised."""
        known = self._known.setdefault(actor._actor_id.hex(), KnownDigests())
        sent, saved = compact_request(request, known.digests())
        self.image_bytes_saved += saved
        try:
            try:
                reply: GatewayReply = await self._remote(actor, sent, meta)
            except RayTaskError as err:
                if sent is request or not isinstance(task_cause(err), MissingImages):
                    raise
                log.info("gateway actor lost %s; resending the request's images", task_cause(err))
                known.forget()
                self.image_bytes_saved -= saved
                sent = request
                reply = await self._remote(actor, sent, meta)
        except ACTOR_LOST:
            known.forget()
            raise
        known.acknowledge(sent)
        return reply

    async def _remote(self, actor: Any, request: ChatRequest, meta: CallMeta) -> GatewayReply:
        self.image_bytes_sent += image_bytes(request)
        reply: GatewayReply = await actor.complete.remote(request, meta)
        return reply

    def ledger(self) -> list[llm_calls.Row]:
        """Every ledger row of the calls answered since the last call (kept on the driver from
        the replies; the actors' own copies are drained so they do not grow)."""
        rows, self._rows = self._rows, []
        for actor in self.actors:
            try:
                ray.get(actor.drain_ledger.remote(), timeout=30)
            except (RayActorError, GetTimeoutError) as err:  # dead for good: nothing to free
                log.debug("gateway ledger drain: %s", err)
        return rows
