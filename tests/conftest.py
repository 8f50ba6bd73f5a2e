"""Shared fixtures: one small local Ray cluster per test session, tiny generated probe sets."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def trained_probe_cache(tmp_path_factory) -> Path:
    """A coin-scale cache holding the probe CNN, trained here once per session by the real recipe
    (about 2 minutes on 2 cores); tests point COIN_SCALE_CACHE at it."""
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    cache = tmp_path_factory.mktemp("trained-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COIN_SCALE_CACHE", str(cache))
        probe_cnn_checkpoint()
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
