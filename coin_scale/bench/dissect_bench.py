"""Dissection throughput against a bare forward pass of the same model, batch size and device."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coin_scale.bench.images import write_synthetic_images
from coin_scale.dissect.config import DissectConfig
from coin_scale.models import ModelSource, build_module, resolve_model
from coin_scale.runtime.dissect import run_dissection

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DissectBenchConfig:
    """What `coin-scale bench dissect` measures."""

    model: str = "resnet18"
    weights: str = "none"
    layer: str = "layer4"
    images: int = 512
    """Synthetic 320x240 JPEGs generated for the run (ignored when `probe` is given)."""
    probe: str | None = None
    """A folder of real images to use instead of generated ones."""
    batch_size: int = 32
    repeats: int = 3
    """Alternating bare/pipeline measurements; the medians are reported."""
    address: str | None = None


def bare_forward_img_s(module: torch.nn.Module, batch_size: int, n_images: int, size: int) -> float:
    """Images/s of `module(x)` alone: preprocessed inputs, inference_mode, channels_last."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = module.to(device).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch_size, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    batches = max(1, n_images // batch_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        module(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            module(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def run_dissect_bench(config: DissectBenchConfig) -> dict[str, Any]:
    """Median bare and pipeline images/s, and their ratio.

    The pipeline's time runs from ready replicas to the last merged batch: it includes reading and
    decoding every JPEG, preprocessing, Ray transfers and the top-k merge; the replicas' one-off
    start-up (worker process, torch import, model build) is reported apart as replica_startup_s.
    """
    from coin_scale.actors.cluster import connect

    payload = resolve_model(ModelSource(model=config.model, weights=config.weights))
    module = build_module(payload)
    session = connect(config.address)
    bare, piped, startup = [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="coin-scale-bench-") as tmp:
            probe = config.probe
            if probe is None:
                probe = str(Path(tmp) / "probe")
                write_synthetic_images(probe, config.images, seed=0)
            n_images = sum(1 for p in Path(probe).rglob("*") if p.is_file())
            for repeat in range(config.repeats):
                bare.append(
                    bare_forward_img_s(module, config.batch_size, n_images, payload.preprocess.crop)
                )
                result = run_dissection(
                    DissectConfig(
                        model=config.model, weights=config.weights, layer=config.layer,
                        probe=probe, warehouse=str(Path(tmp) / f"wh{repeat}"),
                        batch_size=config.batch_size, force=True, address=config.address,
                    ),
                    progress=False,
                )  # fmt: skip
                piped.append(result.images_per_second)
                startup.append(result.startup_seconds)
                log.info("repeat %d: bare %.1f img/s, pipeline %.1f img/s", repeat, bare[-1], piped[-1])
    finally:
        session.close()
    bare_median, piped_median = statistics.median(bare), statistics.median(piped)
    return {
        "benchmark": "dissect",
        "model": config.model,
        "weights": config.weights,
        "layer": config.layer,
        "images": n_images,
        "probe": config.probe or "synthetic 320x240 JPEG",
        "batch_size": config.batch_size,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "repeats": config.repeats,
        "bare_img_s": round(bare_median, 2),
        "pipeline_img_s": round(piped_median, 2),
        "ratio": round(piped_median / bare_median, 3),
        "replica_startup_s": round(statistics.median(startup), 2),
        "bare_runs": [round(v, 2) for v in bare],
        "pipeline_runs": [round(v, 2) for v in piped],
    }
