"""The one dispatch loop of the actor pools (model replicas, render workers, LLM gateways).

A `Dispatcher` holds a pool's actors and its `PoolHealth`. Work goes to the least loaded live
actor; a call whose actor was lost (`RayActorError`, `ActorUnavailableError`: the process or its
node died, Ray restarts it) is resubmitted to a live one, that actor resting for a doubling
backoff, up to `max_attempts` tries of the item; any other error is the task's own and goes to
the caller. `stream` keeps a bounded number of calls in flight and yields results in completion
order (replicas, renderers); `call` runs one call from asyncio (gateways, many at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NamedTuple

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from coin_scale.actors.health import PoolHealth

log = logging.getLogger(__name__)

ACTOR_LOST = (RayActorError, ActorUnavailableError)
"""Errors that say the actor was lost, not that the task failed: the call may go elsewhere."""

GiveUp = Callable[[str, int, BaseException], BaseException]
"""(what was lost, attempts, last error) -> the error to raise once an item's tries are spent."""


def actor_lost(err: BaseException) -> bool:
    """Whether `err` means the actor was lost (resubmit) rather than that its task failed."""
    return isinstance(err, ACTOR_LOST)


def _give_up(what: str, attempts: int, err: BaseException) -> BaseException:
    return RuntimeError(f"{what} failed on {attempts} attempts: {err}")


def task_cause(err: BaseException) -> BaseException:
    """The exception a remote task raised, without Ray's `RayTaskError` wrapper (any other error
    as it is): a user error on an actor reaches the user as its own one line."""
    from ray.exceptions import RayTaskError

    cause = getattr(err, "cause", None) if isinstance(err, RayTaskError) else None
    return cause if isinstance(cause, Exception) else err


class Done(NamedTuple):
    """One item's answer: its index, the slot (actor) that answered, the value."""

    item: int
    slot: int
    value: Any


class Dispatcher:
    """`actors` (one pool), their health, and the loops that feed them with failover."""

    def __init__(
        self,
        actors: Sequence[Any],
        *,
        kind: str,
        max_attempts: int,
        in_flight_each: int = 1,
        give_up: GiveUp = _give_up,
    ) -> None:
        """`kind` names an actor in the log ("replica"); `give_up` builds the error raised once
        an item was lost `max_attempts` times (a RuntimeError by default)."""
        self.health = PoolHealth(len(actors), max_attempts=max_attempts)
        self.actors = list(actors)
        self.kind, self.in_flight_each, self.give_up = kind, in_flight_each, give_up

    @property
    def resubmitted(self) -> int:
        return self.health.resubmitted

    def _lost(self, slot: int, what: str, attempts: int, err: BaseException) -> None:
        """Record the loss and log it, or raise `give_up`'s error when the item's tries are spent."""
        delay = self.health.lost(slot, attempts)
        if delay is None:
            raise self.give_up(what, attempts, err) from err
        log.warning(
            "%s %d lost %s (%s); resubmitting, that %s rests %.1f s",
            self.kind, slot, what, type(err).__name__, self.kind, delay,
        )  # fmt: skip

    def _check_open(self) -> None:
        if not self.actors:
            raise RuntimeError(f"the pool of {self.kind}s is shut down")

    def stream(
        self,
        n: int,
        submit: Callable[[Any, int], ray.ObjectRef],
        *,
        what: Callable[[int], str] = "item {}".format,
        on_lost: Callable[[int, BaseException], None] | None = None,
    ) -> Iterator[Done]:
        """`submit(actor, item)` for items 0..n-1, at most `in_flight_each` per actor in flight,
        yielding each item's `Done` exactly once in completion order; a lost item is resubmitted
        (`on_lost(item, error)` is told). `what(item)` names an item in the log and errors."""
        if n:
            self._check_open()
        health = self.health
        queue = list(range(n))[::-1]
        attempts = [0] * n
        pending: dict[ray.ObjectRef, tuple[int, int]] = {}
        capacity = self.in_flight_each * len(self.actors)
        try:
            while queue or pending:
                while queue and len(pending) < capacity and (slot := health.acquire()) is not None:
                    item = queue.pop()
                    attempts[item] += 1
                    try:
                        pending[submit(self.actors[slot], item)] = (item, slot)
                    except BaseException:
                        health.release(slot)
                        raise
                if not pending:  # every actor rests: wait for the first to be due again
                    time.sleep(health.wait_s())
                    continue
                # With room left, wake when a resting actor is due; when full, only an answer helps.
                timeout = health.wait_s() if queue and len(pending) < capacity else None
                done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
                if not done:
                    continue
                item, slot = pending.pop(done[0])
                health.release(slot)
                try:
                    value = ray.get(done[0])
                except ACTOR_LOST as err:
                    self._lost(slot, what(item), attempts[item], err)
                    if on_lost:
                        on_lost(item, err)
                    queue.append(item)
                    continue
                health.succeeded(slot)
                yield Done(item, slot, value)
        finally:  # a caller that stops early or an error: what is still in flight is let go
            for _, slot in pending.values():
                health.release(slot)

    async def call(self, submit: Callable[[Any], Awaitable[Any]], *, what: str) -> Any:
        """`await submit(actor)` on the least loaded live actor, resubmitted to another while the
        actor is lost (up to `max_attempts` tries); a task's own error is raised as is."""
        self._check_open()
        health = self.health
        for attempt in range(1, health.max_attempts + 1):
            while (slot := health.acquire()) is None:  # every actor rests
                await asyncio.sleep(health.wait_s())
            try:
                value = await submit(self.actors[slot])
            except ACTOR_LOST as err:
                self._lost(slot, what, attempt, err)
                continue
            finally:
                health.release(slot)
            health.succeeded(slot)
            return value
        raise AssertionError("unreachable: the last attempt's loss raises")


class DispatchedPool:
    """What every pool shares: its actors behind one `Dispatcher` (`self.dispatch`)."""

    dispatch: Dispatcher

    @property
    def actors(self) -> list[Any]:
        return self.dispatch.actors

    @property
    def resubmitted(self) -> int:
        """Items sent to another actor because theirs was lost (each may have run once already)."""
        return self.dispatch.resubmitted

    def pids(self) -> list[int]:
        """Each actor's process id, in order."""
        return list(ray.get([actor.pid.remote() for actor in self.actors]))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
