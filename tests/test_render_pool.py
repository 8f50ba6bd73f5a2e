"""The backend launcher, the supervised renderer and the Ray RenderPool: real server subprocesses
on 127.0.0.1, killed on purpose, and the shared local Ray cluster."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from unity_pool.client import RendererUnavailable, RenderResult
from unity_pool.launcher import (
    BackendProcess,
    BackendStartError,
    LaunchSpec,
    SupervisedRenderer,
)
from unity_pool.procedural.backend import encode_png
from unity_pool.procedural.draw import render
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Scene, SceneError

NEVER_READY = 'python -c "import time; time.sleep(60)"'


def _psutil() -> ModuleType:
    import ray  # noqa: F401  (Ray puts its bundled psutil on sys.path)

    return pytest.importorskip("psutil")


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` has exited (a zombie counts as exited), within `timeout` seconds."""
    psutil = _psutil()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _expected(scenes: list[Scene]) -> list[bytes]:
    return [encode_png(render(scene)[0]) for scene in scenes]


# --- launcher and supervised renderer, no Ray -------------------------------------------------


def test_launch_spec_checks_its_fields_and_resolves_python() -> None:
    spec = LaunchSpec.parse("python -m unity_pool.procedural --port 0")
    assert spec.argv() == [sys.executable, "-m", "unity_pool.procedural", "--port", "0"]
    assert spec.display() == "python -m unity_pool.procedural --port 0"
    with pytest.raises(ValueError, match="non-empty argv"):
        LaunchSpec(command=())
    with pytest.raises(ValueError, match="start_timeout: expected seconds > 0"):
        LaunchSpec(start_timeout=0)


def test_backend_starts_answers_and_stops_without_orphans() -> None:
    with SupervisedRenderer() as renderer:
        status = renderer.status()
        assert status.pid is not None and status.port is not None and status.restarts == 0
        answer = renderer.ping()
        assert answer["backend"] == "procedural" and answer["pid"] == status.pid
        assert status.pid in [p.pid for p in _psutil().Process().children()]
    assert renderer.status().pid is None
    assert _gone(status.pid)


def test_a_backend_that_never_prints_ready_fails_naming_command_and_timeout() -> None:
    process = BackendProcess(LaunchSpec.parse(NEVER_READY, start_timeout=1.0))
    start = time.monotonic()
    with pytest.raises(BackendStartError) as info:
        process.start()
    assert time.monotonic() - start < 4
    message = str(info.value)
    assert "time.sleep(60)" in message and "start timeout 1s" in message and "READY" in message
    assert isinstance(info.value, RendererUnavailable)
    assert info.value.timeout == 1.0 and info.value.command.startswith("python -c")
    sleepers = [
        child for child in _psutil().Process().children(recursive=True)
        if "time.sleep(60)" in " ".join(child.cmdline())
    ]  # fmt: skip
    assert not process.running and sleepers == []


def test_a_backend_that_exits_or_prints_a_bad_ready_line_is_reported() -> None:
    exits = LaunchSpec.parse("python -c \"import sys; sys.exit('boom: no GPU')\"")
    with pytest.raises(
        BackendStartError, match=r"exited with status 1 before printing READY(.|\n)*boom: no GPU"
    ):
        BackendProcess(exits).start()
    garbled = LaunchSpec.parse(
        "python -c \"print('READY soon', flush=True); import time; time.sleep(30)\""
    )
    with pytest.raises(BackendStartError, match="malformed ready line 'READY soon'"):
        BackendProcess(garbled).start()
    with pytest.raises(BackendStartError, match="cannot start backend"):
        BackendProcess(LaunchSpec(command=("/nonexistent/renderer",))).start()


def test_supervised_renderer_restarts_a_killed_backend_and_reissues_the_request() -> None:
    scenes = sample_scenes(96, 7)  # 224x224: the request takes several tenths of a second
    with SupervisedRenderer() as renderer:
        renderer.render_many(scenes[:2])
        victim = renderer.status().pid
        assert victim is not None
        killer = threading.Timer(0.15, os.kill, (victim, signal.SIGKILL))
        killer.start()
        results = renderer.render_many(scenes)
        killer.join()
        status = renderer.status()
        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)  # now while idle: the health check brings it back
        assert renderer.ping()["pid"] == renderer.status().pid != status.pid
    assert status.restarts == 1 and status.reissued == 1 and status.pid != victim
    assert renderer.status().restarts == 2
    assert [r.data for r in results] == _expected(scenes)


def test_batches_come_back_in_request_order_each_scene_once() -> None:
    from coin_scale.actors.render_batches import InRequestOrder, cut
    from unity_pool.client import RenderFailed, RenderFailure

    specs = [s.to_dict() for s in sample_scenes(7, 1, width=16, height=16)]
    batches = cut(specs, 3)
    assert [len(b) for b in batches] == [3, 3, 1] and batches[2][0] == specs[6]
    image = RenderResult(data=b"x", format="png", width=16, height=16, attributes={}, render_ms=1.0)
    failed = RenderFailure(index=1, type="internal", message="boom")
    order = InRequestOrder(batches)
    assert list(order.add(1, [image, failed, image], worker=0)) == []
    assert list(order.add(2, [image], worker=1)) == []  # batches 1 and 2 wait for batch 0
    out = list(order.add(0, [image] * 3, worker=1))
    assert len(out) == 7 and out[4] == dataclasses.replace(failed, index=4)  # its request index
    with pytest.raises(AssertionError, match="batch 1 came back twice"):
        list(order.add(1, [image] * 3, worker=0))
    with pytest.raises(RenderFailed, match="worker 1 answered 2 outcomes for batch 0 of 3"):
        list(InRequestOrder(batches).add(0, [image] * 2, worker=1))


# --- the Ray pool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(ray_cluster) -> Iterator:
    from coin_scale.actors.render_pool import RenderPool, RenderPoolConfig

    pool = RenderPool(RenderPoolConfig(workers=2, batch_size=4, cpus_each=0.25))
    pool.wait_ready(timeout=60)
    yield pool
    pool.shutdown()


def test_pool_returns_every_image_once_in_request_order(pool) -> None:
    scenes = sample_scenes(40, 2, width=64, height=64)
    results = pool.render_many(scenes)
    assert all(isinstance(r, RenderResult) for r in results)
    assert [r.data for r in results] == _expected(scenes)
    answers = pool.ping()
    assert [a["backend"] for a in answers] == ["procedural", "procedural"]
    assert len({a["backend_pid"] for a in answers}) == 2
    assert pool.render_many([]) == []


def test_pool_survives_a_backend_killed_in_the_middle_of_a_batch(pool) -> None:
    scenes = sample_scenes(64, 0, width=96, height=96)
    expected = _expected(scenes)
    before = pool.status()
    victim = before[0].backend.pid
    outcomes = pool.iter_outcomes(scenes)
    first = next(outcomes)  # the other batches are in flight now
    os.kill(victim, signal.SIGKILL)
    results = [first, *outcomes]
    assert len(results) == 64
    assert [r.data for r in results] == expected  # each image exactly once, in order
    assert len({r.data for r in results}) == 64
    after = pool.status()
    assert after[0].backend.restarts == before[0].backend.restarts + 1
    assert after[0].backend.pid != victim and after[0].worker_pid == before[0].worker_pid
    assert _gone(victim)


def test_pool_reports_invalid_specs_by_their_index_in_the_request(pool) -> None:
    specs = [s.to_dict() for s in sample_scenes(10, 4, width=32, height=32)]
    specs[6]["objects"][0]["color"] = "mauve"
    outcomes = pool.render_outcomes(specs)
    assert [i for i, o in enumerate(outcomes) if not isinstance(o, RenderResult)] == [6]
    assert outcomes[6].index == 6 and outcomes[6].path == "objects[0].color"
    with pytest.raises(SceneError, match=r"1 of 10 scenes failed: scene 6: .*mauve"):
        pool.render_many(specs)


def test_pool_backs_the_explainer_tools(pool) -> None:
    from unity_pool.tools import RenderTools

    tools = RenderTools(renderer=pool)
    scenes = sample_scenes(5, 9, width=32, height=32)
    refs = tools.render(scenes)
    assert [tools.store.get(r.id).data for r in refs] == _expected(scenes)
    edited = tools.edit(refs[0].id, {"color": "cyan"})
    assert edited.attributes is not None and edited.attributes["color"] == "cyan"


def test_pool_resubmits_batches_of_an_actor_that_died(pool, ray_cluster) -> None:
    """Runs last among the tests of the shared pool: it leaves one worker dead for good."""
    scenes = sample_scenes(64, 5, width=64, height=64)
    doomed = pool.status()[1]
    outcomes = pool.iter_outcomes(scenes)
    first = next(outcomes)
    ray_cluster.kill(pool.workers[1], no_restart=True)
    results = [first, *outcomes]
    assert [r.data for r in results] == _expected(scenes)
    assert pool.resubmitted >= 1
    assert _gone(doomed.backend.pid)  # the backend died with its actor: no orphan


def test_pool_shutdown_leaves_no_backend_process(ray_cluster) -> None:
    from coin_scale.actors.render_pool import RenderPool, RenderPoolConfig

    pool = RenderPool(RenderPoolConfig(workers=1, cpus_each=0.25))
    (status,) = pool.wait_ready(timeout=60)
    assert status.backend.pid is not None and _psutil().pid_exists(status.backend.pid)
    pool.shutdown()
    assert _gone(status.backend.pid) and _gone(status.worker_pid)


def test_pool_with_a_backend_that_never_starts_says_which_command_and_timeout(ray_cluster) -> None:
    from coin_scale.actors.render_pool import RenderPool, RenderPoolConfig

    config = RenderPoolConfig(
        workers=1,
        cpus_each=0.25,
        start_timeout=1.0,
        command=tuple(LaunchSpec.parse(NEVER_READY).command),
    )
    with RenderPool(config) as pool, pytest.raises(BackendStartError) as info:
        pool.wait_ready(timeout=60)
    assert "time.sleep(60)" in str(info.value) and "start timeout 1s" in str(info.value)


def test_unity_slot_is_requested_only_when_asked(ray_cluster) -> None:
    from coin_scale.actors.render_pool import RenderPool, RenderPoolConfig

    assert "resources" not in RenderPoolConfig().actor_options()
    config = RenderPoolConfig(workers=1, cpus_each=0.25, unity_slot=True)
    assert config.actor_options()["resources"] == {"unity_slot": 1}
    with (
        RenderPool(config) as pool,
        pytest.raises(RendererUnavailable, match="'unity_slot'.*has 0"),
    ):
        pool.wait_ready(timeout=1.0)
