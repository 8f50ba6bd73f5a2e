"""The quality bar, smaller: on the probe-trained CNN (trained here, on rendered scenes, exactly as
the embedded defaults do on first use), the top units' labels name the predicted class's shape."""

from __future__ import annotations

import pytest

from coin_scale.sweep.quality import QualityConfig, evaluate_label_quality

pytestmark = pytest.mark.slow


def test_top_unit_labels_name_the_predicted_shape(ray_cluster, tmp_path_factory, monkeypatch):
    from coin_scale.sweep.inputs import probe_model

    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("COIN_SCALE_CACHE", str(cache))
    model = probe_model()  # trains the real recipe once (about 2 minutes on 2 cores)
    result = evaluate_label_quality(
        QualityConfig(model=model, targets=40, probe_images=600, warehouse=str(tmp_path_factory.mktemp("wh")))
    )
    assert result["prediction_accuracy"] >= 0.85
    assert result["any_topk_label_names_class"] >= 0.75, result
