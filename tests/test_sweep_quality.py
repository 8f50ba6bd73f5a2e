"""The quality bars, smaller: on the probe-trained CNN (trained here, on rendered scenes, exactly as
the embedded defaults do on first use), the top units' labels name the predicted class's shape, and
ablating the chain's units costs the prediction far more than ablating random units."""

from __future__ import annotations

import pytest

from coin_scale.bench.chain_bench import ChainBenchConfig, run_chain_bench
from coin_scale.sweep.quality import QualityConfig, evaluate_label_quality

pytestmark = pytest.mark.slow


@pytest.fixture()
def probe_cnn_path(trained_probe_cache, monkeypatch) -> str:
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    monkeypatch.setenv("COIN_SCALE_CACHE", str(trained_probe_cache))
    return probe_cnn_checkpoint()


@pytest.mark.timeout(1200)  # the session fixture may train the probe CNN first
def test_top_unit_labels_name_the_predicted_shape(ray_cluster, probe_cnn_path, tmp_path):
    result = evaluate_label_quality(
        QualityConfig(model=probe_cnn_path, targets=40, probe_images=600, warehouse=str(tmp_path))
    )
    assert result["prediction_accuracy"] >= 0.85
    assert result["any_topk_label_names_class"] >= 0.75, result


@pytest.mark.timeout(1200)  # the session fixture may train the probe CNN first
def test_the_chain_is_faithful_and_names_the_class(ray_cluster, probe_cnn_path, tmp_path):
    result = run_chain_bench(
        ChainBenchConfig(model=probe_cnn_path, targets=20, probe_images=600, draws=10,
                         warehouse=str(tmp_path))  # fmt: skip
    )
    # issue 7's bar: the top-8 chain units of the last layer drop the margin >= 5x more than 8
    # random units (zero ablation, median over targets)
    assert result["median_ratio_chain_vs_random"]["zero"] >= 5.0, result
    assert result["targets_with_ratio_at_least_5"]["zero"] >= 0.75, result
    assert result["chain_names_class_by_layer"]["layer4"] >= 0.75, result


@pytest.mark.timeout(1200)  # the session fixture may train the probe CNN first
def test_every_explanation_is_scored_and_predicts_its_unit(ray_cluster, probe_cnn_path, tmp_path, capsys):
    import run_sweep
    from coin_scale.storage import run_query

    wh = tmp_path / "wh"
    # Human judgments of the even units' explanations (two each: H = 0.75); odd units have none.
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("layer,unit,soft_correct\n" + "".join(
        f"layer4,{u},1\nlayer4,{u},0.5\n" for u in range(0, 128, 2)))  # fmt: skip
    argv = ["--model", probe_cnn_path, "--probe-images", "600", "--warehouse", str(wh),
            "--run-id", "q1", "--no-progress", "--human-ratings", str(ratings)]  # fmt: skip
    assert run_sweep.main(argv) == 0
    assert "explanation scores on 256 held-out rendered images" in capsys.readouterr().out
    _, rows = run_query(wh, """
        SELECT unit, max(value) FILTER (WHERE metric = 'auc') AS auc,
               max(value) FILTER (WHERE metric = 'interpscore') AS interp,
               count(*) AS n, any_value(details) AS details,
               max(value) FILTER (WHERE metric = 'H') AS h,
               max(value) FILTER (WHERE metric = 'S') * 0.3 + max(value) FILTER (WHERE metric = 'C') * 0.3
               + max(value) FILTER (WHERE metric = 'R') * 0.2 AS scr
        FROM scores WHERE run_id = 'q1' AND test IN ('predictive', 'interpscore')
        GROUP BY unit ORDER BY unit""")  # fmt: skip
    _, explained = run_query(wh, "SELECT count(*) FROM explanations WHERE run_id = 'q1' AND formula IS NOT NULL")
    assert len(rows) == explained[0][0] == 11  # 8 positive + 3 negative units, each scored
    assert {unit % 2 for unit, *_ in rows} == {0, 1}  # rated and unrated units both scored
    for unit, _, interp, n, details, h, scr in rows:
        if unit % 2 == 0:  # rated: H is the mean judgment and enters the aggregate
            assert n == 10 and '"parts": ["S", "C", "R", "H"]' in details and h == 0.75
            assert interp == pytest.approx(scr + 0.2 * 0.75)
        else:
            assert n == 9 and '"parts": ["S", "C", "R"]' in details and h is None
            assert interp == pytest.approx(scr / 0.8)
    aucs = sorted(auc for _, auc, *_ in rows)
    # The offline explanations of a trained model predict their units on images they never saw.
    assert aucs[len(aucs) // 2] >= 0.75 and aucs[0] > 0.6, aucs
    assert all(0.0 < interp < 1.0 for _, _, interp, *_ in rows)
    # A malformed ratings file is refused before any work, naming the line.
    ratings.write_text("layer,unit,soft_correct\nlayer4,3,yes\n")
    assert run_sweep.main([*argv[:-2], "--human-ratings", str(ratings), "--run-id", "q2"]) == 2
    err = capsys.readouterr().err
    assert "ratings.csv line 2" in err and "soft_correct" in err
