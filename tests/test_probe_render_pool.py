"""Issue 19, item 2: rendered probe and scoring sets are rendered on the render pool (Ray actors
running the procedural backend), the same bytes as in process, and a render worker killed in the
middle of a probe set changes none of them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from coin_scale.accounting import RENDERS
from coin_scale.probe.rendered import rendered_probe
from coin_scale.runtime.pools import render_opener

pytestmark = pytest.mark.slow


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


class KillOneWorkerAfterFirstChunk:
    """The pool as `write_probe_set` sees it, SIGKILLing one render worker's actor process once
    the first chunk of scenes is back (so the next chunks find it dead or restarting)."""

    def __init__(self, pool) -> None:  # noqa: ANN001
        self.pool, self.calls, self.killed = pool, 0, []

    def render_many(self, scenes):  # noqa: ANN001, ANN201
        results = self.pool.render_many(scenes)
        self.calls += 1
        if self.calls == 1:
            pid = self.pool.status()[0].worker_pid
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
        return results


def test_a_probe_set_rendered_on_the_pool_is_the_one_rendered_in_process(ray_cluster, tmp_path):
    local = Path(rendered_probe(150, 64, progress=False, root_dir=tmp_path / "local"))
    before = RENDERS.snapshot()
    pooled = Path(rendered_probe(150, 64, progress=False, root_dir=tmp_path / "pool",
                                 open_renderer=render_opener(address=None)))  # fmt: skip
    used = RENDERS.snapshot().minus(before)
    assert used.to_dict() == {"render_pool": 150, "driver": 0}
    assert _files(pooled) == _files(local)  # every image, the attributes and the index, byte for byte

    # A worker killed after the first chunk is replaced; its batches go to a live worker.
    opened = render_opener(address=None)
    with opened() as pool:
        killer = KillOneWorkerAfterFirstChunk(pool)
        from unity_pool.probeset import ProbeSetParams, write_probe_set

        root = tmp_path / "killed"
        write_probe_set(root, ProbeSetParams(n=150, seed=0, size=64), progress=False,
                        renderer=killer)  # fmt: skip
        assert killer.killed and killer.calls == 3  # chunks of 64: 64, 64, 22
        assert pool.status()[0].worker_pid not in killer.killed  # Ray restarted the actor
    assert _files(root) == _files(local)
