"""Shared fixtures: one small local Ray cluster per test session, tiny generated probe sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from coin_scale.bench.images import write_synthetic_images


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run wherever CUDA exists and are skipped, saying why, elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance with 2 CPUs, shared by every test that needs Ray."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # "local": never join a cluster some earlier, killed test left named in ray_current_cluster
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory) -> Path:
    """36 small generated photographs in 3 labelled folders, plus one corrupt file."""
    root = tmp_path_factory.mktemp("probe")
    write_synthetic_images(root, 24, size=(96, 72), seed=1, classes=3)
    write_synthetic_images(root / "png", 12, size=(80, 80), seed=2, fmt="PNG", classes=2)
    (root / "class0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a jpeg")
    return root


@dataclass
class _Training:
    """The probe CNN's training in the background (see `pytest_collection_finish`)."""

    process: subprocess.Popen[bytes]
    cache: Path
    log: IO[str]


_training: list[_Training] = []

_TRAIN = Path(__file__).with_name("probe_cnn_train_run.py")


def pytest_collection_finish(session: pytest.Session) -> None:
    """When a selected test needs the trained probe CNN, train it from the start of the session in
    a process of its own at the lowest CPU priority: the suite leaves most of the two cores idle
    (Ray, subprocesses and servers wait on each other), so the 2 minutes of training overlap the
    tests before the first one that needs it instead of adding to them. Same recipe, same threads."""
    if not any("trained_probe_cache" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    cache = Path(tempfile.mkdtemp(prefix="coin-scale-trained-cache-"))
    log = (cache / "training.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(_TRAIN)], env=os.environ | {"COIN_SCALE_CACHE": str(cache)},
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(19),
    )  # fmt: skip
    _training.append(_Training(process, cache, log))


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _training:
        training = _training.pop()
        training.process.kill()
        training.process.wait()
        training.log.close()
        shutil.rmtree(training.cache, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_probe_cache(tmp_path_factory) -> Path:
    """A coin-scale cache holding the probe CNN, trained once per session by the real recipe
    (about 2 minutes on 2 cores; in the background from the session's start, see
    `pytest_collection_finish`); tests point COIN_SCALE_CACHE at it."""
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    if _training:
        training = _training[0]
        cache = training.cache
        code = training.process.wait(timeout=1200)
        if code != 0:
            tail = (cache / "training.log").read_text()[-3000:]
            raise RuntimeError(f"training the probe CNN failed (exit code {code}):\n{tail}")
    else:  # the hook found no test that needs it by name: train here
        cache = tmp_path_factory.mktemp("trained-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COIN_SCALE_CACHE", str(cache))
        probe_cnn_checkpoint()  # the background's checkpoint, checked (trained again if unusable)
    return cache


TINY_CLIP = "coin-tiny-clip"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny CLIP architecture (a test double of ViT-B-32's shape) as a local open_clip model
    config file: `--clip-model PATH.json`, which every process that builds it (the image-text
    replicas included) registers with open_clip."""
    import json

    folder = tmp_path_factory.mktemp("clip-configs")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    path = folder / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(config))
    return str(path)
