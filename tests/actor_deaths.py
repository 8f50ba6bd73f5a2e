"""Waiting for a killed Ray actor to be dead, for the tests that kill one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until_dead(call: Callable[[], Any], *, seconds: float = 60.0) -> None:
    """Send `call()` (a call on the killed actor, returning its ObjectRef) until one fails with
    the actor's death. `ray.kill` only asks: calls sent meanwhile may still be answered (a CI run
    saw the first call after the kill answered)."""
    import ray
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(call(), timeout=seconds)
        except RayActorError:
            return
        time.sleep(0.05)
    pytest.fail(f"the killed actor still answers after {seconds:g} s")
