"""`coin-scale bench llm` end to end on tiny settings: it measures, it never exceeds the limit,
and it loses no unit under faults (the figures themselves are in BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest

from coin_scale.cli import main

pytestmark = pytest.mark.slow


def test_bench_llm_reports_rate_concurrency_and_faults(ray_cluster, capsys):
    argv = ["bench", "llm", "--parts", "rate,concurrency,faults", "--seconds", "4", "--units", "3",
            "--latency", "0.05", "--rpm", "600"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rate, faults = report["rate"], report["faults"]
    assert rate["requests"] >= 20 and rate["max_in_any_60s_window"] <= 600
    assert rate["refused_by_server_429"] == 0 and rate["replies_ok"] == rate["requests"]
    assert faults["units"] == 3 and faults["units_lost"] == 0 and faults["calls"] >= 3
    many = report["concurrency"]
    assert many["ok_one_at_a_time"] == many["ok_all_at_once"] == 3
    # The agents measured on the replicas, several agents' images in one pass.
    assert 0 < many["all_at_once_forward_passes"] <= many["all_at_once_measured_images"]
    # The agents shared one render cache; the instant-server run says which processes spent
    # its CPU: the driver (agents, renders) and the gateway actors (SDK calls) at least.
    assert many["all_at_once_renders"] >= many["all_at_once_render_cache_hits"] >= 0
    cpu = many["instant_server_cpu"]
    assert {"driver", "ray::LLMGatewayActor"} <= set(cpu["cpu_s"])
    assert cpu["cpu_total_s"] >= sum(cpu["cpu_s"].values()) - 0.05 and cpu["wall_s"] > 0
    assert 0 < cpu["cores_busy"] <= cpu["cores"] + 0.5


def test_bench_llm_rejects_unknown_parts(capsys):
    assert main(["bench", "llm", "--parts", "speed"]) == 2
    assert "unknown parts" in capsys.readouterr().err
