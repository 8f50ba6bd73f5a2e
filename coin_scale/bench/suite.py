"""`coin-scale bench suite`: the throughput figures of issue 9 in one run, as JSON and as rows
for BENCHMARKS.md.

Parts (each a ratio or rate measured within this run, so a noisy shared machine moves numerator
and denominator together): the dissection pipeline against a bare forward pass; the offline
explainer's units/s; the LLM gateway's achieved rate against its configured limit; the wall time
of each phase of a sweep; a scaling curve over model replicas on this machine; and one over
simulated nodes (`ray.cluster_utils.Cluster`, a head that takes no work and N one-CPU workers).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARTS = ("dissect", "explain", "llm", "sweep", "replicas", "nodes")


@dataclass(frozen=True, kw_only=True)
class SuiteConfig:
    """What `coin-scale bench suite` measures; the defaults take about 10 minutes on 2 cores."""

    model: str = "resnet18"
    weights: str = "none"
    layer: str = "layer4"
    images: int = 256
    """Synthetic 320x240 JPEGs of the dissection parts."""
    batch_size: int = 32
    repeats: int = 3
    """Repeats of every timed measurement; medians are reported."""
    explain_units: int = 256
    explain_images: int = 1000
    llm_rpm: int = 600
    llm_seconds: float = 75.0
    """Length of the gateway's rate measurement."""
    llm_latency_s: float = 0.2
    sweep_model: str = "probe"
    """Model of the timed sweep (`probe`: the probe CNN, trained on first use)."""
    sweep_weights: str = "default"
    sweep_probe_images: int = 1000
    replicas: tuple[int, ...] = (1, 2)
    nodes: tuple[int, ...] = (1, 2, 3)
    parts: tuple[str, ...] = PARTS
    address: str | None = None
    """Ray address of the non-node parts (None: a local Ray)."""

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(
                f"parts: expected some of {', '.join(PARTS)}; got {', '.join(self.parts) or 'none'}"
            )
        if min(self.replicas, default=0) < 1 or min(self.nodes, default=0) < 1:
            raise ValueError("replicas and nodes: expected counts >= 1, e.g. 1,2 and 1,2,3")
        if self.images < 1 or self.repeats < 1 or self.batch_size < 1:
            raise ValueError("images, repeats and batch_size must be >= 1")


def run_suite(config: SuiteConfig, on_part: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every chosen part, in order; a JSON-ready dict with the settings and each part's figures."""
    out: dict[str, Any] = {
        "benchmark": "suite",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "machine": _machine(),
    }
    runners: dict[str, Callable[[SuiteConfig], dict[str, Any]]] = {
        "dissect": _dissect, "explain": _explain, "llm": _llm, "sweep": _sweep,
        "replicas": _replicas, "nodes": _nodes,
    }  # fmt: skip
    for part in config.parts:
        if on_part is not None:
            on_part(part)
        began = time.perf_counter()
        out[part] = runners[part](config)
        out[part]["part_seconds"] = round(time.perf_counter() - began, 1)
    return out


def _machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _dissect(config: SuiteConfig) -> dict[str, Any]:
    from coin_scale.bench.dissect_bench import DissectBenchConfig, run_dissect_bench

    result = run_dissect_bench(DissectBenchConfig(
        model=config.model, weights=config.weights, layer=config.layer, images=config.images,
        batch_size=config.batch_size, repeats=config.repeats, address=config.address,
    ))  # fmt: skip
    keep = ("bare_img_s", "pipeline_img_s", "ratio", "replica_startup_s", "bare_runs",
            "pipeline_runs", "images")  # fmt: skip
    return {k: result[k] for k in keep}


def _explain(config: SuiteConfig) -> dict[str, Any]:
    from coin_scale.bench.explain_bench import ExplainBenchConfig, run_explain_bench

    result = run_explain_bench(ExplainBenchConfig(
        units=config.explain_units, images=config.explain_images, repeats=config.repeats,
    ))  # fmt: skip
    keep = ("units", "images", "units_per_s", "seconds", "recovered_fraction", "runs")
    return {k: result[k] for k in keep}


def _llm(config: SuiteConfig) -> dict[str, Any]:
    from coin_scale.bench.llm_bench import LLMBenchConfig, run_llm_bench

    result = run_llm_bench(LLMBenchConfig(
        latency_s=config.llm_latency_s, rpm=config.llm_rpm, rate_seconds=config.llm_seconds,
        parts=("rate",), address=config.address,
    ))  # fmt: skip
    return dict(result["rate"])


def _sweep(config: SuiteConfig) -> dict[str, Any]:
    """One default-style sweep (offline explainer, scores on), timed phase by phase."""
    from coin_scale.report import write_report
    from coin_scale.sweep.config import ProbeConfig, RunConfig, SweepConfig, TargetConfig
    from coin_scale.sweep.run import run_sweep

    with tempfile.TemporaryDirectory(prefix="coin-scale-bench-sweep-") as tmp:
        began = time.perf_counter()
        outcome = run_sweep(SweepConfig(
            target=TargetConfig(model=config.sweep_model, weights=config.sweep_weights),
            probe=ProbeConfig(probe_images=config.sweep_probe_images),
            run=RunConfig(warehouse=str(Path(tmp) / "wh"), run_id="bench-suite", progress=False,
                          address=config.address),
        ), reporter=write_report)  # fmt: skip
        total = time.perf_counter() - began
    phases = {name: round(seconds, 2) for name, seconds in outcome.phases}
    return {
        "model": config.sweep_model,
        "probe_images": config.sweep_probe_images,
        "total_s": round(total, 2),
        "phases_s": phases,
        "largest_phase": max(phases, key=phases.__getitem__) if phases else None,
    }


def _probe_dir(root: str, n: int) -> str:
    from coin_scale.bench.images import write_synthetic_images

    probe = str(Path(root) / "probe")
    write_synthetic_images(probe, n, seed=0)
    return probe


def _dissect_img_s(
    config: SuiteConfig, probe: str, work: str, replicas: int, address: str | None
) -> tuple[float, float]:
    """(images/s of the probe pass, replica start-up seconds) of one forced dissection."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.runtime.dissect import run_dissection

    result = run_dissection(DissectConfig(
        model=config.model, weights=config.weights, layer=config.layer, probe=probe,
        warehouse=str(Path(work) / "wh"), batch_size=config.batch_size, force=True,
        address=address, replicas=replicas,
    ), progress=False)  # fmt: skip
    return result.images_per_second, result.startup_seconds


def _curve(points: Sequence[tuple[int, list[float]]], key: str) -> list[dict[str, Any]]:
    """Median images/s per point and its speed-up over the first point."""
    base = statistics.median(points[0][1])
    return [
        {key: n, "img_s": round(statistics.median(runs), 2),
         "speedup": round(statistics.median(runs) / base, 3), "runs": [round(r, 2) for r in runs]}
        for n, runs in points
    ]  # fmt: skip


def _replicas(config: SuiteConfig) -> dict[str, Any]:
    """Dissection images/s with 1, 2, ... replicas on this machine's local Ray (cores split)."""
    from coin_scale.actors.cluster import connect

    session = connect(config.address)
    points: list[tuple[int, list[float]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="coin-scale-bench-replicas-") as tmp:
            probe = _probe_dir(tmp, config.images)
            for n in config.replicas:
                runs = [_dissect_img_s(config, probe, tmp, n, config.address)[0]
                        for _ in range(config.repeats)]  # fmt: skip
                points.append((n, runs))
                log.info("%d replica(s): %.1f img/s", n, statistics.median(runs))
    finally:
        session.close()
    return {"images": config.images, "curve": _curve(points, "replicas")}


def _nodes(config: SuiteConfig) -> dict[str, Any]:
    """Dissection images/s on simulated clusters: a head with no CPUs and N one-CPU worker nodes,
    one replica per node. The nodes share this machine's cores, so the curve shows the
    distribution overhead and where the machine, not the design, stops it."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    points: list[tuple[int, list[float]]] = []
    startup: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="coin-scale-bench-nodes-") as tmp:
        probe = _probe_dir(tmp, config.images)
        for n in config.nodes:
            cluster = Cluster()
            try:  # the head inside the try: a start cut short still removes what it started
                cluster.add_node(num_cpus=0)
                for _ in range(n):
                    cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                ray.init(address=cluster.address, log_to_driver=False)
                runs, starts = [], []
                for _ in range(config.repeats):
                    img_s, start = _dissect_img_s(config, probe, tmp, n, cluster.address)
                    runs.append(img_s)
                    starts.append(start)
                points.append((n, runs))
                startup[n] = round(statistics.median(starts), 2)
                log.info("%d node(s): %.1f img/s", n, statistics.median(runs))
            finally:
                ray.shutdown()
                cluster.shutdown()
    curve = _curve(points, "nodes")
    for point in curve:
        point["replica_startup_s"] = startup[point["nodes"]]
    return {"images": config.images, "cpus_per_node": 1, "curve": curve}


def markdown_rows(result: dict[str, Any], command: str) -> str:
    """The suite's figures as a BENCHMARKS.md section: the command, then one table row per figure."""
    lines = [
        f"### bench suite, {result['started_at'][:10]}",
        "",
        f"`{command}` ({result['machine']['cpus']} CPUs, {result['machine']['device']}; medians of "
        f"{result['config']['repeats']} runs)",
        "",
        "| part | figure | value |",
        "| --- | --- | --- |",
    ]
    rows: list[tuple[str, str, str]] = []
    if "dissect" in result:
        d = result["dissect"]
        rows += [("dissect", f"pipeline vs bare forward, {result['config']['model']} "
                  f"{result['config']['layer']}, {d['images']} images",
                  f"{d['ratio']:.3f} ({d['pipeline_img_s']} vs {d['bare_img_s']} img/s)")]  # fmt: skip
    if "explain" in result:
        e = result["explain"]
        rows += [("explain", f"offline explainer, {e['units']} units x {e['images']} images",
                  f"{e['units_per_s']} units/s")]  # fmt: skip
    if "llm" in result:
        m = result["llm"]
        rows += [("llm", f"gateway rate: achieved / configured {m['configured_rpm']} rpm",
                  f"{m['achieved_over_configured']:.3f} ({m['achieved_rpm']} rpm, "
                  f"{m['refused_by_server_429']} refused)")]  # fmt: skip
    if "sweep" in result:
        s = result["sweep"]
        phases = ", ".join(f"{k} {v:.1f}" for k, v in s["phases_s"].items())
        rows += [("sweep", f"phases of one sweep ({s['model']}), seconds",
                  f"total {s['total_s']:.1f}: {phases}")]  # fmt: skip
    for part, key in (("replicas", "replicas"), ("nodes", "nodes")):
        if part in result:
            curve = ", ".join(f"{p[key]}: {p['img_s']} img/s (x{p['speedup']})"
                              for p in result[part]["curve"])  # fmt: skip
            what = ("dissection img/s by replicas, local Ray" if part == "replicas" else
                    "dissection img/s by simulated nodes (1 CPU each, head takes no work)")  # fmt: skip
            rows.append((part, what, curve))
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def append_rows(path: str | Path, section: str) -> None:
    """Append `section` to the BENCHMARKS.md at `path` (created if missing), after a blank line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    path.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
