"""`coin-scale bench suite` (issue 9): every part runs on tiny inputs, reports JSON and appends a
table section to a BENCHMARKS.md; figures are ratios or rates within the run, never asserted
against a time."""

from __future__ import annotations

import json

import pytest

from coin_scale.bench.suite import markdown_rows
from coin_scale.cli import main


@pytest.mark.slow
def test_the_suite_reports_its_parts_as_json_and_markdown_rows(tmp_path, capsys):
    """Every part but the timed sweep (a whole sweep, measured phase by phase by the sweep's own
    tests) on tiny inputs, with two-point scaling curves."""
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nearlier figures stay\n")
    argv = ["bench", "suite", "--parts", "dissect,explain,llm,replicas,nodes", "--images", "16",
            "--batch-size", "8", "--repeats", "1", "--explain-units", "16",
            "--explain-images", "120", "--llm-seconds", "3", "--llm-rpm", "600",
            "--replicas", "1,2", "--nodes", "1,2", "--append", str(bench_md)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["parts"] == ["dissect", "explain", "llm", "replicas", "nodes"]
    d = result["dissect"]
    assert d["images"] == 16
    assert d["ratio"] == pytest.approx(d["pipeline_img_s"] / d["bare_img_s"], rel=0.01)
    assert result["explain"]["units_per_s"] > 0
    assert 0 < result["llm"]["achieved_over_configured"] <= 1.1
    for part, key in (("replicas", "replicas"), ("nodes", "nodes")):
        curve = result[part]["curve"]
        assert [p[key] for p in curve] == [1, 2] and curve[0]["speedup"] == 1.0
        assert all(p["img_s"] > 0 for p in curve)
    text = bench_md.read_text()
    assert text.startswith("# Benchmarks\n\nearlier figures stay\n\n### bench suite, ")
    assert "`coin-scale bench suite --parts dissect,explain,llm,replicas,nodes" in text
    for part in ("dissect", "explain", "llm", "replicas", "nodes"):
        assert f"\n| {part} | " in text


def test_the_sweep_phases_become_one_row():
    result = {
        "started_at": "2026-11-30T10:00:00+00:00", "machine": {"cpus": 2, "device": "cpu"},
        "config": {"repeats": 3, "model": "resnet18", "layer": "layer4"},
        "sweep": {"model": "probe", "total_s": 60.0, "largest_phase": "dissect and explain",
                  "phases_s": {"model and attribution": 2.0, "dissect and explain": 40.0}},
    }  # fmt: skip
    text = markdown_rows(result, "coin-scale bench suite --parts sweep")
    assert text.startswith("### bench suite, 2026-11-30\n")
    assert "| sweep | phases of one sweep (probe), seconds | total 60.0: model and attribution " in text
    assert "dissect and explain 40.0 |" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--parts", "dissect,warp"], "parts: expected some of dissect"),
        (["--nodes", "1,x"], "--nodes: expected counts like 1,2,3"),
        (["--replicas", "0,1"], "replicas and nodes: expected counts >= 1"),
    ],
)
def test_bad_suite_flags_are_one_line_errors(extra, message, capsys):
    assert main(["bench", "suite", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
