"""The user's story of held-out scores: `coin-scale dissect --explainer clip | clip-formula |
offline` over a labelled folder of photographs holds a fifth of it out of the explainer, scores
every explanation there and stores AUC, Pearson r, F1 and AUPRC in `scores`; `--held-out 0`
stores none; the sweep prints each unit's scores and shows them in its report. A tiny open_clip
architecture with random weights stands in for the image-text model."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from coin_scale.probe import scan_probe
from coin_scale.probe.split import held_out_images

PREDICTOR = {"clip": "word_similarity", "clip-formula": "soft_formula", "offline": "formula"}



@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """100 small generated photographs in 4 labelled folders: enough to hold out 19."""
    from coin_scale.bench.images import write_synthetic_images

    root = tmp_path_factory.mktemp("photos")
    write_synthetic_images(root, 100, size=(64, 48), seed=3, classes=4)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _dissect(photos, warehouse, run_id: str, explainer: str, tiny_clip: str, *extra: str) -> list[str]:
    return ["dissect", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
            "--probe", str(photos), "--warehouse", str(warehouse), "--batch-size", "16",
            "--no-progress", "--run-id", run_id, "--explainer", explainer,
            "--clip-model", tiny_clip, "--clip-weights", "none", "--concepts", "textures,colors",
            "--select", "layer4=0-23", *extra]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("explainer", ["clip", "clip-formula", "offline"])
def test_dissect_scores_every_explanation_on_images_it_never_saw(
    explainer, tiny_clip, ray_cluster, photos, tmp_path, cache, capsys
):
    from coin_scale.cli import main
    from coin_scale.storage import connect

    n_held = sum(held_out_images(scan_probe(photos), 0.2))
    assert n_held >= 10
    warehouse = tmp_path / "wh"
    assert main(_dissect(photos, warehouse, "h1", explainer, tiny_clip)) == 0
    out = capsys.readouterr().out
    line = re.search(
        rf"held-out scores on {n_held} images the explainer never saw: median AUC ([0-9.]+) "
        r"over (\d+) of (\d+) explained units", out,
    )  # fmt: skip
    assert line, out
    assert 0.0 <= float(line[1]) <= 1.0 and int(line[2]) > 0
    assert "test = 'heldout'" in out  # the query that lists every unit's scores
    con = connect(str(warehouse))
    rows = con.sql(
        "SELECT unit, metric, value, kind, layer, details FROM scores "
        "WHERE run_id = 'h1' AND test = 'heldout'"
    ).fetchall()
    units = {r[0] for r in rows}
    assert len(units) == int(line[2]) and units <= set(range(24))
    by_metric: dict[str, list[float]] = {}
    for _, metric, value, kind, layer, _ in rows:
        by_metric.setdefault(metric, []).append(value)
        assert (kind, layer) == ("neuron", "layer4")
    assert {"auc", "f1", "auprc"} <= set(by_metric) <= {"auc", "pearson", "f1", "auprc"}
    assert len(by_metric["auc"]) == len(units)
    for metric, values in by_metric.items():
        low = -1.0 if metric == "pearson" else 0.0
        assert all(low <= v <= 1.0 for v in values), (metric, values)
    details = [json.loads(r[5]) for r in rows]
    assert {d["predictor"] for d in details} == {PREDICTOR[explainer]}
    assert {d["n_images"] for d in details} == {n_held}
    assert all(1 <= d["n_positive"] < n_held for d in details)
    # the explainer read the other images only
    described = con.sql(
        "SELECT description FROM explanations WHERE run_id = 'h1' AND status = 'ok' LIMIT 1"
    ).fetchall()[0][0]
    seen = 100 - n_held
    assert f"over {seen} images" in described or f"of {seen} probe images" in described


@pytest.mark.slow
def test_held_out_0_shows_every_image_to_the_explainer_and_stores_no_such_score(
    tiny_clip, ray_cluster, photos, tmp_path, cache, capsys
):
    from coin_scale.cli import main
    from coin_scale.storage import connect

    warehouse = tmp_path / "wh"
    assert main(_dissect(photos, warehouse, "h0", "clip", tiny_clip, "--held-out", "0")) == 0
    out = capsys.readouterr().out
    assert "held-out" not in out
    con = connect(str(warehouse))
    assert con.sql("SELECT count(*) FROM scores WHERE test = 'heldout'").fetchall() == [(0,)]
    described = con.sql("SELECT description FROM explanations LIMIT 1").fetchall()[0][0]
    assert "over 100 images" in described


def test_a_bad_held_out_share_is_one_line_before_any_work(photos, tiny_clip, tmp_path, capsys):
    from coin_scale.cli import main

    warehouse = tmp_path / "wh"
    argv = _dissect(photos, warehouse, "bad", "offline", tiny_clip, "--held-out", "1.5")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--held-out takes the share of probe images" in err and "Traceback" not in err
    assert not warehouse.exists() or not any(warehouse.iterdir())


@pytest.mark.slow
def test_the_sweep_prints_each_units_held_out_scores_and_shows_them_in_the_report(
    tiny_clip, ray_cluster, photos, tmp_path, cache, capsys
):
    import run_sweep
    from coin_scale.storage import connect

    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(image)
    warehouse = tmp_path / "wh"
    argv = ["--image", str(image), "--model", "resnet18", "--weights", "none", "--top-k", "3",
            "--negatives", "1", "--probe", str(photos), "--warehouse", str(warehouse),
            "--run-id", "s1", "--no-progress", "--explainer", "clip", "--clip-model", tiny_clip,
            "--clip-weights", "none", "--concepts", "textures,colors", "--ablation-draws", "1"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    n_held = sum(held_out_images(scan_probe(photos), 0.2))
    lines = re.findall(r"^      held-out(?: AUC [0-9.]+, r -?[0-9.—]+, F1 [0-9.]+, AUPRC [0-9.]+ "
                       rf"on {n_held} images|: not scored \(.*\))", out, flags=re.M)  # fmt: skip
    assert len(lines) == 4, out  # one per explained unit, under its line
    rows = (
        connect(str(warehouse))
        .sql("SELECT DISTINCT unit FROM scores WHERE run_id = 's1' AND test = 'heldout'")
        .fetchall()
    )
    scored = sum("AUC" in x for x in lines)
    assert len(rows) == scored
    report = (warehouse / "reports" / "s1" / "report.html").read_text()
    assert report.count('class="kv heldout"') == 3  # the positive units' cards


@pytest.mark.slow
def test_an_llms_labels_are_read_by_the_image_text_model_when_one_is_given(
    tiny_clip, ray_cluster, photos, tmp_path, cache, capsys, monkeypatch
):
    """`dissect --explainer openai` (agents through a fake server): without --clip-model the
    labels are not scored and the line says why; with it they are read as texts."""
    from coin_scale.cli import main
    from coin_scale.storage import connect
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer

    key = "sk-planted-heldout-1234"
    warehouse = tmp_path / "wh"
    argv = ["dissect", "--model", "mobilenet_v3_small", "--weights", "none", "--layer",
            "features.0", "--batch-size", "16", "--no-progress", "--probe", str(photos),
            "--warehouse", str(warehouse), "--explainer", "openai", "--select", "features.0=0-3",
            "--rpm", "60000", "--tpm", "1e12"]  # fmt: skip
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeProviderServer("openai", ExperimenterPolicy(), api_key=key) as server:
        assert main([*argv, "--run-id", "bare", "--base-url", server.base_url]) == 0
        bare = capsys.readouterr().out
        read = [*argv, "--run-id", "read", "--base-url", server.base_url, "--clip-model", tiny_clip,
                "--clip-weights", "none"]  # fmt: skip
        assert main(read) == 0
        out = capsys.readouterr().out
    assert "none of the 4 explained units scored (not scored: 4 a free-text label" in bare
    assert "--clip-model" in bare
    assert "median AUC" in out or "none of the 4 explained units scored" in out
    rows = (
        connect(str(warehouse))
        .sql("SELECT run_id, metric, details FROM scores WHERE test = 'heldout'")
        .fetchall()
    )
    assert {r[0] for r in rows} == {"read"}
    assert {json.loads(r[2])["predictor"] for r in rows} == {"text_similarity"}
