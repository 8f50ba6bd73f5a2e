"""run_sweep.py --layers: a chain across layers, every node explained, every edge stored, and a
faithfulness test of the chain against random and most-active units."""

from __future__ import annotations

import pytest

import run_sweep
from coin_scale.storage import connect

BASE = ["--model", "resnet18", "--weights", "none", "--top-k", "3", "--negatives", "1",
        "--probe-images", "60", "--no-progress", "--fanout", "2", "--ablation-draws", "5"]  # fmt: skip


@pytest.mark.slow
def test_a_three_layer_chain_is_explained_stored_and_tested(ray_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path.parent / "shared-cache"))
    wh = tmp_path / "wh"
    argv = [*BASE, "--layers", "layer2,layer3,layer4", "--warehouse", str(wh), "--run-id", "c1",
            "--no-unit-scores"]  # scored in test_sweep_quality and test_sweep_sae  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "drivers in layer3" in out and "drivers in layer2" in out
    assert "faithfulness, layer4: zeroing the chain's top 3" in out
    assert "Down the chain: layer4 #" in out and "is driven by layer3 #" in out

    con = connect(wh)
    edges = con.sql(
        "SELECT target_kind, source_layer, coalesce(target_layer, 'class'), count(*), min(weight) "
        "FROM chain_edges WHERE run_id = 'c1' GROUP BY ALL ORDER BY 2"
    ).fetchall()
    layers = [(e[0], e[1], e[2]) for e in edges]
    assert layers == [("unit", "layer2", "layer3"), ("unit", "layer3", "layer4"),
                      ("class", "layer4", "class")]  # fmt: skip
    assert edges[1][3] <= 3 * 2 and edges[1][4] > 0 and edges[0][4] > 0
    # every node of the chain is explained, with its own layer's dissection
    nodes = con.sql(
        "SELECT DISTINCT source_layer, source_unit FROM chain_edges WHERE run_id = 'c1'"
    ).fetchall()
    explained = con.sql(
        "SELECT layer, unit, dissection_id FROM explanations WHERE run_id = 'c1'"
    ).fetchall()
    assert set(nodes) == {(layer, unit) for layer, unit, _ in explained}
    assert len({d for layer, _, d in explained if layer == "layer2"}) == 1
    assert len({d for _, _, d in explained}) == 3
    # faithfulness: per layer, zero and mean ablation, chain/random/activation over a curve of k
    scores = con.sql(
        "SELECT layer, ablation, selection, k, value, draws FROM scores "
        "WHERE run_id = 'c1' AND test = 'ablation' AND metric = 'margin_drop'"
    ).fetchall()
    assert {s[0] for s in scores} == {"layer2", "layer3", "layer4"}
    assert {s[1] for s in scores} == {"zero", "mean"} and {s[2] for s in scores} == {
        "chain", "random", "activation"}  # fmt: skip
    assert {s[3] for s in scores if s[0] == "layer4"} >= {1, 2, 3}
    assert {s[5] for s in scores if s[2] == "random"} == {5}
    assert con.sql("SELECT layers FROM runs WHERE run_id = 'c1'").fetchall() == [
        (["layer2", "layer3", "layer4"],)
    ]
    text = con.sql("SELECT text FROM class_explanations WHERE run_id = 'c1'").fetchall()[0][0]
    assert "Down the chain:" in text


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("layer4,layer3", "must go from the input towards the output"),
        ("layer3,layer3,layer4", "appears twice"),
        ("layer2,layer9", "layer9"),
        ("layer4.0.conv1,layer4.0.downsample", "does not feed"),
        ("layer2,,layer4", "comma-separated layer names"),
    ],
)
def test_bad_chains_are_refused_before_any_work(tmp_path, capsys, layers, message):
    wh = tmp_path / "wh"
    argv = [*BASE, "--probe", "none", "--layers", layers, "--warehouse", str(wh)]
    assert run_sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not wh.exists() or not any(wh.rglob("*.parquet"))


def test_layer_and_layers_must_agree(tmp_path, capsys):
    argv = [*BASE, "--probe", "none", "--layers", "layer3,layer4", "--layer", "layer3",
            "--warehouse", str(tmp_path)]  # fmt: skip
    assert run_sweep.main(argv) == 2
    assert "disagree" in capsys.readouterr().err
