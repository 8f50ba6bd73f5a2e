"""`coin-scale bench sae`: the pure IoU comparison without Ray, and one tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from coin_scale.bench.sae_bench import SAEBenchConfig
from coin_scale.bench.sae_summaries import (
    compare_top_n,
    compare_units,
    distribution,
    format_score_table,
    iou_summary,
    pooled_units,
    score_summary,
    target_checks,
    top_n_masks,
)
from coin_scale.cli import main
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.eval.detection import Detection
from coin_scale.eval.explanation_scores import UnitScores
from coin_scale.eval.interpscore import InterpScore
from coin_scale.eval.predictive import PredictiveScore
from coin_scale.explain import OfflineExplainerConfig
from coin_scale.explain.explanation import Explanation
from coin_scale.sae import SparseAutoencoder


def explanation(
    unit: int, iou: float, reason: str | None = None, *, mask_size: int = 2
) -> Explanation:
    """An offline explanation: `ok` with its IoU, or `empty` for `reason`."""
    return Explanation(
        unit=unit, label="" if reason else f"unit {unit}", iou=None if reason else iou,
        mask_size=mask_size, threshold=0.0, status="empty" if reason else "ok", reason=reason,
    )  # fmt: skip


def test_iou_summary_counts_unexplained_units_as_zero_only_in_mean_iou_all():
    units = [explanation(0, 0.8), explanation(1, 0.4), explanation(2, 0.6)]
    summary = iou_summary([*units, explanation(3, 0.0, "constant")])
    assert summary["units"] == 4 and summary["explained"] == 3
    assert summary["mean_iou"] == pytest.approx(0.6)
    assert summary["mean_iou_all"] == pytest.approx(1.8 / 4)
    assert summary["median_iou"] == pytest.approx(0.6)
    assert summary["fraction_iou_ge_0_5"] == pytest.approx(2 / 3)
    assert summary["statuses"] == {"empty": 1, "ok": 3}
    assert summary["reasons"] == {"constant": 1}
    assert "mean_iou_full_mask" not in summary
    full = iou_summary([*units, explanation(3, 0.9, mask_size=1)], full_mask=2)
    assert full["full_mask_units"] == 3 and full["mean_iou_full_mask"] == pytest.approx(0.6)
    empty = iou_summary([explanation(0, 0.0, "empty_mask")])
    assert empty["explained"] == 0 and empty["mean_iou"] is None and empty["mean_iou_all"] == 0


def test_compare_units_explains_both_kinds_the_same_way():
    generator = torch.Generator().manual_seed(0)
    n_images = 200
    concepts = torch.zeros(6, n_images, dtype=torch.bool)
    for i in range(6):  # disjoint concepts of 10% of the images each: the masks' size
        concepts[i, 20 * i : 20 * (i + 1)] = True
    names = tuple(f"shape=s{i}" for i in range(6))
    matrix = ConceptMatrix(names=names, matrix=concepts)
    noise = torch.rand(n_images, 3, generator=generator) * 0.1
    exact = concepts[:3].T.float() + noise  # three units that are exactly a concept each
    scrambled = torch.rand(n_images, 5, generator=generator)  # five that follow no concept
    scrambled[:, 4] = 1.0  # and one constant unit
    result = compare_units(
        exact,
        scrambled,
        matrix,
        OfflineExplainerConfig(),
        generator=torch.Generator().manual_seed(0),
    )
    assert result["neurons"]["explained"] == 3 and result["neurons"]["mean_iou"] == pytest.approx(1)
    assert result["neurons"]["chance_mean_iou"] < 0.5  # the same masks on shuffled images
    assert result["neurons"]["full_mask_units"] == 3  # 20 images: 10% of 200
    features = result["features"]
    assert features["units"] == 5 and features["explained"] == 4
    assert features["reasons"]["constant"] == 1 and features["mean_iou"] < 0.5
    with pytest.raises(ValueError, match="same images"):
        compare_units(exact, scrambled[:10], matrix, OfflineExplainerConfig())


def test_top_n_masks_have_one_size_and_break_ties_by_image_order():
    acts = torch.tensor([[0.0, 1.0], [3.0, 1.0], [0.0, 1.0], [2.0, 5.0], [0.0, 0.0]])
    masks = top_n_masks(acts, 3)
    assert masks.shape == (2, 5) and masks.sum(dim=1).tolist() == [3, 3]
    # unit 0 fires on images 1 and 3 only: its mask is those plus the first silent image (0)
    assert masks[0].nonzero().flatten().tolist() == [0, 1, 3]
    assert masks[1].nonzero().flatten().tolist() == [0, 1, 3]  # 5, then the first two of 1.0
    with pytest.raises(ValueError, match="between 1 and 5"):
        top_n_masks(acts, 6)


def test_compare_top_n_judges_rare_and_dense_units_on_masks_of_one_size():
    n_images = 200
    concepts = torch.zeros(4, n_images, dtype=torch.bool)
    for i in range(4):  # disjoint concepts of 20 images each, from image 100 on
        concepts[i, 100 + 20 * i : 120 + 20 * i] = True
    matrix = ConceptMatrix(names=tuple(f"shape=s{i}" for i in range(4)), matrix=concepts)
    generator = torch.Generator().manual_seed(0)
    # A neuron that is concept 0 (dense: positive everywhere, highest on the concept).
    neurons = concepts[:1].T.float() + torch.rand(n_images, 1, generator=generator) * 0.1 + 0.01
    # A feature firing on 2 images of concept 1 only: under the quantile rule its mask is those 2
    # images; at top-20 its mask is padded with the first 18 images, on which it never fires.
    rare = torch.zeros(n_images, 1)
    rare[[120, 121], 0] = 1.0
    silent = torch.zeros(n_images, 1)  # never fires: not judged
    features = torch.cat([rare, silent], dim=1)
    config = OfflineExplainerConfig(max_length=1)
    quantile = compare_units(neurons, features, matrix, config)
    assert quantile["features"]["mean_iou"] == pytest.approx(2 / 20)  # mask {20, 21} vs concept 1
    [row] = compare_top_n(
        neurons, features, matrix, config, [20], generator=torch.Generator().manual_seed(0)
    )
    assert row["n"] == 20
    assert row["neurons"]["mean_iou"] == pytest.approx(1.0)
    assert row["neurons"]["full_units"] == 1 and row["neurons"]["mean_iou_full"] == pytest.approx(1)
    feats = row["features"]
    assert feats["units"] == 2 and feats["firing_units"] == 1 and feats["full_units"] == 0
    # mask: images 120, 121 and the silent images 0-17 (no concept): best is still concept 1
    assert feats["mean_iou"] == pytest.approx(2 / 38) and feats["mean_iou_full"] is None
    assert 0 <= row["neurons"]["chance_mean_iou"] < 0.5
    checks = target_checks({"dead_fraction": 0.0}, {"fvu": 0.05, "l0": 8.0}, quantile, [row])
    assert checks["features_top20_mean_iou_gt_neurons"] is False
    assert checks["all_met"] is False  # from the quantile comparison only


def test_pooled_units_are_max_over_space_of_maps_and_codes():
    sae = SparseAutoencoder(4, 8, 2, "topk", generator=torch.Generator().manual_seed(0))
    maps = torch.rand(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    neurons, features = pooled_units(maps, sae)
    torch.testing.assert_close(neurons, maps.amax(dim=(2, 3)))
    assert features.shape == (3, 8) and bool((features >= 0).all())
    first = sae.encode(maps[0].permute(1, 2, 0).reshape(4, 4))[0].amax(dim=0)
    torch.testing.assert_close(features[0], first.detach())


def test_target_checks_and_config_validation():
    iou = {"neurons": {"mean_iou": 0.37}, "features": {"mean_iou": 0.40}}
    train = {"dead_fraction": 0.01}
    met = target_checks(train, {"fvu": 0.05, "l0": 8.0}, iou)
    assert met["all_met"] is True
    missed = target_checks({"dead_fraction": None}, {"fvu": 0.2, "l0": 8.0}, iou)
    assert missed["heldout_fvu_le_0.10"] is False and missed["dead_fraction_le_0.10"] is None
    assert missed["all_met"] is False
    with pytest.raises(ValueError, match="--train-seed and --heldout-seed"):
        SAEBenchConfig(model="m.pt", train_seed=3, heldout_seed=3)
    with pytest.raises(ValueError, match="--k must be >= 1"):
        SAEBenchConfig(model="m.pt", k=0)
    with pytest.raises(ValueError, match="--top-n sizes must be >= 1"):
        SAEBenchConfig(model="m.pt", top_n=(200, 0))
    with pytest.raises(ValueError, match="the scoring set would be the held-out images"):
        SAEBenchConfig(model="m.pt", heldout_images=1000, score_images=1000)
    SAEBenchConfig(model="m.pt", heldout_images=1000, score_images=1000, scores=False)


def unit_scores(unit: int, value: float, *, d: float | None = None) -> UnitScores:
    """A scored unit whose every score is `value` (Cohen's d: `d`, else `value`)."""
    found = Detection(f1=value, iou=value, auprc=value, threshold=0.0, positives=8, predicted=8)
    predictive = PredictiveScore(auc=value, cohens_d=value if d is None else d, n_satisfying=8,
                                 n_other=8, detection=found)  # fmt: skip
    interp = InterpScore(S=value, C=value, R=value, H=None, score=value, parts=("S", "C", "R"))
    return UnitScores("layer4", unit, "shape=star", predictive, interp)


def test_distribution_gives_linear_quartiles_of_the_finite_values():
    summary = distribution([4.0, 1.0, 3.0, 2.0, 5.0, math.inf])
    assert summary["n"] == 5 and summary["non_finite"] == 1
    assert (summary["q1"], summary["median"], summary["q3"]) == (2.0, 3.0, 4.0)
    assert summary["mean"] == 3.0 and (summary["min"], summary["max"]) == (1.0, 5.0)
    even = distribution([0.0, 1.0, 2.0, 10.0])  # numpy's linear interpolation between ranks
    assert (even["q1"], even["median"], even["q3"]) == (0.75, 1.5, 4.0)
    empty = distribution([])
    assert empty["n"] == 0 and empty["median"] is None and empty["mean"] is None


def test_score_summary_counts_scorable_units_and_summarises_every_score():
    scored = [unit_scores(i, v) for i, v in enumerate([0.2, 0.4, 0.6, 0.8, 1.0])]
    scored.append(unit_scores(5, 0.9, d=math.inf))  # both sides constant: d left out, rest kept
    notes = [
        UnitScores("layer4", 6, None, note="no formula to score"),
        UnitScores(
            "layer4",
            7,
            "shape=star",
            note="3 of 256 scoring images satisfy the formula; need 8 on each side",
        ),  # fmt: skip
        UnitScores("layer4", 8, "shape=star", note="1 of 256 scoring images satisfy it"),
    ]
    summary = score_summary(scored + notes)
    assert summary["units"] == 9 and summary["scorable"] == 6
    assert summary["notes"] == {
        "no formula to score": 1,
        "too few scoring images satisfy the formula (or all but too few)": 2,
    }
    metrics = summary["metrics"]
    assert set(metrics) == {"auc", "cohens_d", "f1", "auprc", "S", "C", "R", "interp_score"}
    d = metrics["cohens_d"]
    assert d["n"] == 5 and d["non_finite"] == 1
    assert (d["q1"], d["median"], d["q3"]) == pytest.approx((0.4, 0.6, 0.8))
    assert d["mean"] == pytest.approx(0.6)
    for name in ("auc", "f1", "auprc", "S", "C", "R", "interp_score"):  # 0.2 ... 1.0 and 0.9
        m = metrics[name]
        assert m["n"] == 6 and m["median"] == pytest.approx(0.7)
        assert (m["q1"], m["q3"]) == pytest.approx((0.45, 0.875))
        assert m["mean"] == pytest.approx(3.9 / 6)
    features = score_summary(notes)
    table = format_score_table({"images": 256, "neurons": summary, "features": features})
    assert "neurons 6 of 9, features 0 of 3 (256 scoring images)" in table
    assert "| predictive AUC | 0.700 / n/a | 0.450-0.875 / n/a-n/a | 0.650 / n/a |" in table
    subsets = {
        "images": 256,
        "neurons": {"full_mask": features},
        "features": {"full_mask": summary},
    }
    table = format_score_table(subsets, "full_mask")
    assert "scorable full-mask units: neurons 0 of 3, features 6 of 9" in table


@pytest.fixture(scope="module")
def tiny_probe_cnn(tmp_path_factory):
    """A probe CNN trained for one epoch on 192 rendered 32 px images (seconds, not minutes)."""
    from coin_scale.training.probe_cnn import (
        ProbeTrainConfig,
        save_probe_cnn,
        train_probe_cnn,
    )

    config = ProbeTrainConfig(n_train=192, n_val=48, epochs=1, size=32, batch_size=64, width=16,
                              threads=1, progress=False)  # fmt: skip
    module, result = train_probe_cnn(config)
    return save_probe_cnn(tmp_path_factory.mktemp("probe-cnn") / "tiny.pt", module, result)


@pytest.mark.slow
def test_bench_sae_prints_consistent_json(
    ray_cluster, tiny_probe_cnn, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path))  # the scoring set is rendered there
    args = ["bench", "sae", "--model", str(tiny_probe_cnn), "--expansion", "2", "--k", "4",
            "--steps", "40", "--batch-tokens", "64", "--train-images", "64",
            "--heldout-images", "48", "--score-images", "64", "--work-dir", str(tmp_path),
            "--no-progress"]  # fmt: skip
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["benchmark"] == "sae" and report["layer"] == "layer4"
    train, heldout, iou = report["train"], report["heldout"], report["iou"]
    tokens_per_image = train["tokens"] // train["images"]
    assert train["images"] == 64 and train["tokens"] == 64 * tokens_per_image > 0
    assert train["d_sae"] == 32 and train["steps_done"] == 40 and not train["cache_reused"]
    assert train["dead_fraction"] is None  # 40 x 64 tokens: shorter than the dead window
    assert heldout["images"] == 48 and heldout["tokens"] == 48 * tokens_per_image
    for value in (train["fvu"], heldout["fvu"]):
        assert 0 <= value <= 1.5 and math.isfinite(value)
    assert train["l0"] == pytest.approx(4.0) and 0 < heldout["l0"] <= 4
    assert 0 <= heldout["top1_agreement"] <= 1 and heldout["kl"] >= 0
    assert 0 <= heldout["unfired_fraction"] <= 1
    for kind, units in (("neurons", 16), ("features", 32)):
        summary = iou[kind]
        assert summary["units"] == units and 0 < summary["explained"] <= units
        assert sum(summary["statuses"].values()) == units
        assert 0 < summary["mean_iou"] <= 1 and 0 <= summary["fraction_iou_ge_0_5"] <= 1
        assert 0 <= summary["chance_mean_iou"] <= 1
        assert 0 <= summary["full_mask_units"] <= summary["explained"]
        assert summary["mean_iou_all"] == pytest.approx(
            summary["mean_iou"] * summary["explained"] / units
        )
    assert report["explainer"]["quantile"] == 0.9
    [same_size] = report["iou_top_n"]  # default: (1 - 0.9) x 48 images, rounded
    assert same_size["n"] == 5
    for kind in ("neurons", "features"):
        summary = same_size[kind]
        assert 0 <= summary["mean_iou"] <= 1 and 0 <= summary["chance_mean_iou"] <= 1
    assert "features_top5_mean_iou_gt_neurons" in report["targets"]
    assert report["targets"]["dead_fraction_le_0.10"] is None
    assert report["targets"]["all_met"] is False
    scores = report["scores"]
    assert scores["images"] == 64 and scores["seed"] == 7
    for kind, units in (("neurons", 16), ("features", 32)):
        summary = scores[kind]
        assert summary["units"] == units and 0 <= summary["scorable"] <= units
        assert summary["scorable"] + sum(summary["notes"].values()) == units
        auc = summary["metrics"]["auc"]
        assert auc["n"] == summary["scorable"]
        full = summary["full_mask"]
        assert full["min_mask"] == 4 and full["scorable"] <= min(full["units"], summary["scorable"])
        if auc["n"]:
            assert 0 <= auc["q1"] <= auc["median"] <= auc["q3"] <= 1
    assert "scorable: neurons" in err  # the table, on stderr
    assert (tmp_path / "probes" / "single-large-n64-seed0-32" / "attributes.parquet").is_file()
    assert (tmp_path / "probes" / "single-large-n48-seed7-32" / "attributes.parquet").is_file()
    assert (tmp_path / "probes" / "single-large-n64-seed7-32" / "attributes.parquet").is_file()

    # A second run reuses the rendered sets and the activation cache.
    assert main([*args, "--kind", "batchtopk"]) == 0
    again = json.loads(capsys.readouterr()[0])
    assert again["train"]["cache_reused"] and again["config"]["kind"] == "batchtopk"
