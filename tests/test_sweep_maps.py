"""Spatial evidence in a sweep: every explained unit's maps on its shown exemplars and on the
target, stored in `activation_maps` and drawn in its report card."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import run_sweep
from coin_scale.models.layers import LayerInfo
from coin_scale.models.unit_maps import UnitMapsRequest
from coin_scale.probe import scan_probe
from coin_scale.storage import connect
from coin_scale.sweep.maps import maps_requests, spatial_thresholds, threshold_sample
from coin_scale.sweep.records import UnitFinding


def _finding(layer: str, unit: int) -> UnitFinding:
    return UnitFinding(layer=layer, unit=unit, rank=0, contribution=1.0, share=0.1)


def test_requests_group_the_units_by_layer_and_skip_layers_without_a_map():
    layers = {
        "layer4": LayerInfo("layer4", "Sequential", "nchw", 512, (512, 7, 7)),
        "encoder": LayerInfo("encoder", "Encoder", "ntc", 768, (197, 768)),
        "fc": LayerInfo("fc", "Linear", "nc", 1000, (1000,)),
    }
    findings = [_finding("layer4", 9), _finding("fc", 3), _finding("encoder", 1),
                _finding("layer4", 2), _finding("layer4", 9)]  # fmt: skip
    requests = maps_requests(findings, layers)
    assert [(r.layer, r.layout, r.units) for r in requests] == [
        ("layer4", "nchw", (9, 2)), ("encoder", "ntc", (1,))
    ]  # fmt: skip


def test_the_threshold_is_the_top_quantile_over_the_drawn_images_positions_only():
    request = UnitMapsRequest("layer4", "nchw", (9, 2))
    rng = np.random.default_rng(0)
    maps = {k: {"layer4": rng.random((2, 3, 3), dtype=np.float32)} for k in range(5)}
    maps[4]["layer4"][:] = 100.0  # an exemplar, not drawn: it must not move the threshold
    got = spatial_thresholds(maps, [0, 1, 2, 3, 7], [request], 0.9)  # image 7 never ran
    for col, unit in enumerate(request.units):
        positions = np.stack([maps[k]["layer4"][col] for k in range(4)]).ravel()
        assert got[("layer4", unit)].value == pytest.approx(np.quantile(positions, 0.9))
        assert (got[("layer4", unit)].quantile, got[("layer4", unit)].images) == (0.9, 4)
    assert spatial_thresholds(maps, [7], [request], 0.9) == {}  # nothing drawn ran: no threshold


def test_the_drawn_images_depend_on_the_seed_only(probe_dir):
    probe = scan_probe(probe_dir)
    first = threshold_sample(probe, 8, seed=3)
    assert first == threshold_sample(probe, 8, seed=3) != threshold_sample(probe, 8, seed=4)
    assert len(first) == 8 and len(threshold_sample(probe, 500, seed=3)) == len(probe)


@pytest.mark.slow
def test_a_sweep_stores_and_draws_the_maps_of_every_explained_unit(
    ray_cluster, probe_dir, tmp_path, capsys
):
    target = tmp_path / "target.png"
    Image.new("RGB", (120, 90), (30, 140, 200)).save(target)
    wh = tmp_path / "wh"
    argv = ["--image", str(target), "--model", "resnet18", "--weights", "none",
            "--layers", "layer3,layer4", "--fanout", "1", "--top-k", "2", "--negatives", "1",
            "--probe", str(probe_dir), "--exemplars", "4", "--ablation-draws", "2",
            "--warehouse", str(wh), "--run-id", "m1", "--no-progress", "--no-unit-scores"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    assert "activation maps" in capsys.readouterr().out  # its own phase in the timing line
    con = connect(wh)
    explained = con.sql(
        "SELECT layer, unit, dissection_id FROM explanations WHERE run_id = 'm1'"
    ).fetchall()
    assert {layer for layer, _, _ in explained} == {"layer3", "layer4"}
    side = {"layer3": 14, "layer4": 7}
    for layer, unit, did in explained:
        rows = con.execute(
            "SELECT image_role, rank, height, width, len(activation_map), list_max(activation_map), "
            "threshold, dissection_id, kind, threshold_quantile, threshold_images "
            "FROM activation_maps WHERE run_id = 'm1' AND layer = ? AND unit = ? "
            "ORDER BY image_role, rank",
            [layer, unit],
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [("exemplar", k) for k in range(4)] + [
            ("target", None)
        ]
        assert all(r[2:5] == (side[layer], side[layer], side[layer] ** 2) for r in rows)
        assert {(r[7], r[8], r[9], r[10]) for r in rows} == {(did, "neuron", 0.99, 36)}
        # the threshold: the unit's top 1% over every position of its maps on the readable probe
        # images (all 36 of them here), so its strongest exemplar's peak is above it
        (threshold,) = {r[6] for r in rows}
        assert rows[0][5] > threshold
        # a map peaks at the activation the dissection ranked the exemplar by (max reduction)
        peaks = con.execute(
            "SELECT activation FROM exemplars WHERE dissection_id = ? AND unit = ? AND rank < 4 "
            "ORDER BY rank", [did, unit],
        ).fetchall()  # fmt: skip
        assert [r[5] for r in rows[:4]] == pytest.approx([p for (p,) in peaks], rel=1e-4)

    report = (wh / "reports" / "m1" / "report.html").read_text(encoding="utf-8")
    cards = report.split('<section class="unit">')[1:]  # positive units, then the chain's
    negatives = con.sql("SELECT count(*) FROM units WHERE run_id = 'm1' AND sign = 'negative'")
    assert len(cards) == len(explained) - negatives.fetchall()[0][0]
    for card in cards:
        assert card.count('class="exemplar masked"') == 4
        assert card.count('class="exemplar heat"') == 1 and "0 →" in card
        assert "0.99 quantile over every position of its maps on 36 probe images" in card


@pytest.mark.slow
def test_sae_features_are_mapped_through_the_sae(ray_cluster, probe_dir, tmp_path, capsys):
    from tests.test_dissect_sae import write_sae

    sae_path = write_sae(tmp_path / "layer4.safetensors", "layer4", 512)
    target = tmp_path / "target.png"
    Image.new("RGB", (100, 100), (220, 60, 30)).save(target)
    wh = tmp_path / "wh"
    argv = ["--image", str(target), "--model", "resnet18", "--weights", "none", "--units", "sae",
            "--sae", str(sae_path), "--top-k", "2", "--negatives", "0", "--probe", str(probe_dir),
            "--exemplars", "3", "--ablation-draws", "2", "--warehouse", str(wh), "--run-id", "s1",
            "--no-progress", "--no-unit-scores"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    con = connect(wh)
    rows = con.sql(
        "SELECT m.kind, m.height, list_max(m.activation_map), e.activation FROM activation_maps m "
        "JOIN exemplars e ON e.dissection_id = m.dissection_id AND e.unit = m.unit "
        "AND e.rank = m.rank WHERE m.run_id = 's1' AND m.image_role = 'exemplar'"
    ).fetchall()
    assert len(rows) == 2 * 3 and {(kind, h) for kind, h, _, _ in rows} == {("sae", 7)}
    # the maps are the features' codes: they peak at the dissection's (max-reduced) code
    assert [peak for _, _, peak, _ in rows] == pytest.approx([a for *_, a in rows], rel=1e-4)
