"""Synthetic units as a model on pixels: soft formulas, pixel-seeded noise, the attribute net, a
checkpoint that `--model` loads, and the Ray dissection of its `units` layer (issue 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coin_scale.cli import main
from coin_scale.concepts.formula import And, AndNot, Leaf, Or, evaluate, parse_text
from coin_scale.concepts.synthetic import SyntheticUnit
from coin_scale.models.attribute_net import concept_names, head_spec
from coin_scale.models.synthetic_model import (
    PixelNoise,
    SoftFormulaUnits,
    build_synthetic_model,
    save_synthetic_model,
    soft_evaluate,
)
from coin_scale.training.attribute_net import (
    AttributeTrainConfig,
    attribute_net_path,
    render_attribute_dataset,
    save_attribute_net,
    train_attribute_net,
)

NAMES = ("shape=circle", "shape=star", "color=red", "color=blue")


def _probabilities() -> torch.Tensor:
    """Two images: (circle 0.9, star 0.1, red 0.6, blue 0.4), (0.2, 0.8, 0.0, 1.0)."""
    return torch.tensor([[0.9, 0.1, 0.6, 0.4], [0.2, 0.8, 0.0, 1.0]])


# --- Soft formulas and noise -------------------------------------------------------------------


def test_soft_evaluate_hand_cases() -> None:
    p = _probabilities()
    torch.testing.assert_close(soft_evaluate(Leaf(2), p), torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(soft_evaluate(And(Leaf(0), Leaf(2)), p), torch.tensor([0.54, 0.0]))
    # OR is the probabilistic sum a + b - ab
    torch.testing.assert_close(soft_evaluate(Or(Leaf(1), Leaf(2)), p), torch.tensor([0.64, 0.8]))
    torch.testing.assert_close(
        soft_evaluate(AndNot(Leaf(1), Leaf(2)), p), torch.tensor([0.04, 0.8])
    )
    torch.testing.assert_close(
        soft_evaluate(AndNot(Or(Leaf(0), Leaf(1)), Leaf(3)), p), torch.tensor([0.546, 0.0])
    )


def test_soft_evaluate_is_evaluate_on_zero_one_probabilities() -> None:
    matrix = torch.tensor(
        [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool
    )
    for text in ("color=red", "(shape=circle AND color=red)", "(shape=star OR color=red)",
                 "(shape=star AND NOT color=blue)"):  # fmt: skip
        formula = parse_text(text, NAMES)
        assert soft_evaluate(formula, matrix.T.float()).tolist() == (
            evaluate(formula, matrix).float().tolist()
        )


def test_soft_formula_units_add_each_units_noise() -> None:
    formulas = [Leaf(0), And(Leaf(1), Leaf(3))]
    units = SoftFormulaUnits(formulas, [0.0, 0.5])
    normal = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    expected = torch.tensor([[0.9, 0.04 + 1.0], [0.2, 0.8 - 1.0]])
    torch.testing.assert_close(units(_probabilities(), normal), expected)
    torch.testing.assert_close(units(_probabilities()), torch.tensor([[0.9, 0.04], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="one noise std per formula"):
        SoftFormulaUnits(formulas, [0.1])


def test_pixel_noise_depends_only_on_the_pixels() -> None:
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    noise = PixelNoise(3, seed=5, mean=mean, std=std)
    pixels = torch.randint(0, 256, (400, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    x = (pixels.float() - m) / s
    z = noise(x)
    assert z.shape == (400, 3) and z.dtype == torch.float32
    torch.testing.assert_close(noise(x[7:9]), z[7:9])  # another batch, same draws
    torch.testing.assert_close(noise(x.contiguous(memory_format=torch.channels_last)), z)
    assert not torch.equal(PixelNoise(3, seed=6, mean=mean, std=std)(x), z)
    changed = x.clone()
    changed[0, 0, 0, 0] += 1 / s[0, 0, 0, 0]  # one pixel, one grey level
    assert bool((noise(changed)[0] != z[0]).all())
    assert abs(float(z.mean())) < 0.15 and 0.85 < float(z.std()) < 1.15


# --- The attribute net and the model -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory) -> Path:
    """An attribute net trained for seconds (accuracy irrelevant), at the cache's path."""
    cache = tmp_path_factory.mktemp("attribute-cache")
    config = AttributeTrainConfig(
        n_train=256, n_val=32, epochs=1, batch_size=32, width=8, threads=1
    )
    net, result = train_attribute_net(config)
    assert set(result.val_accuracy) == {a for a, _ in head_spec()}
    return save_attribute_net(attribute_net_path(cache), net, result)


UNITS = (
    SyntheticUnit(name="red", formula="color=red", kind="mono", noise=0.0),
    SyntheticUnit(
        name="sky-or-grid", formula="(background=sky OR background=grid)", kind="or", noise=0.2
    ),  # fmt: skip
    SyntheticUnit(
        name="red-not-star", formula="(color=red AND NOT shape=star)", kind="and_not", noise=0.1
    ),  # fmt: skip
)


def test_attribute_dataset_targets_are_the_rendered_attributes() -> None:
    heads = head_spec()
    images, targets = render_attribute_dataset(heads, 6, 3, 32)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    assert targets.shape == (6, len(heads))
    names = concept_names(heads)
    assert names[:2] == ("shape=circle", "shape=square") and "light=bright" in names
    assert not any(n.startswith(("size=", "n_objects=")) for n in names)


def test_synthetic_model_from_a_spec_runs_a_batch(tiny_net: Path, tmp_path: Path) -> None:
    from coin_scale.models import ModelSource, build_module, describe_layers, resolve_model

    model, kwargs, pre = build_synthetic_model(UNITS, tiny_net, noise_seed=3)
    images, _ = render_attribute_dataset(head_spec(), 5, 1, 64)
    x = pre.normalize(images)
    with torch.inference_mode():
        out = model(x)
        probabilities = model.concepts(model.attributes(x))
        normal = model.noise(x)
    assert out.shape == (5, 3)
    names = model.concept_names
    red, star = names.index("color=red"), names.index("shape=star")
    sky, grid = names.index("background=sky"), names.index("background=grid")
    torch.testing.assert_close(out[:, 0], probabilities[:, red])
    sky_or_grid = (
        probabilities[:, sky]
        + probabilities[:, grid]
        - probabilities[:, sky] * probabilities[:, grid]
    )
    torch.testing.assert_close(out[:, 1], sky_or_grid + 0.2 * normal[:, 1])
    torch.testing.assert_close(
        out[:, 2], probabilities[:, red] * (1 - probabilities[:, star]) + 0.1 * normal[:, 2]
    )
    layers = {layer.name: layer for layer in describe_layers(model, "synthetic_units", 64)}
    assert (layers["units"].layout, layers["units"].units) == ("nc", 3)
    # LLM agents measure a unit on new images through TorchUnitMeter: same values
    from PIL import Image

    from coin_scale.agent.subject import TorchUnitMeter

    meter = TorchUnitMeter(model, pre, "units", "nc", unit=1)
    pils = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    torch.testing.assert_close(torch.tensor(meter.measure(pils)), out[:, 1])
    # the checkpoint is a `--model PATH`: rebuilt from arch_kwargs, same outputs
    path = save_synthetic_model(tmp_path / "synthetic.pt", UNITS, tiny_net, noise_seed=3)
    payload = resolve_model(ModelSource(model=str(path)))
    assert payload.arch == "synthetic_units" and payload.class_names == (
        "red",
        "sky-or-grid",
        "red-not-star",
    )
    assert payload.arch_kwargs == kwargs
    with torch.inference_mode():
        torch.testing.assert_close(build_module(payload)(x), out)


def test_synthetic_model_names_a_concept_the_net_cannot_see(tiny_net: Path) -> None:
    bad = SyntheticUnit(name="big", formula="n_objects=1", kind="mono", noise=0.0)
    with pytest.raises(ValueError, match=r"synthetic unit 1 \('big'\).*predicts shape, color"):
        build_synthetic_model((UNITS[0], bad), tiny_net)


# --- Through the Ray dissection ----------------------------------------------------------------


@pytest.fixture(scope="module")
def single_object_probe(tmp_path_factory) -> Path:
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    root = tmp_path_factory.mktemp("single") / "probe"
    params = ProbeSetParams(n=48, seed=0, size=64, fixed=(("n_objects", 1), ("size", "large")))
    write_probe_set(root, params, progress=False)
    return root


@pytest.mark.slow
def test_synthetic_units_dissected_on_ray_like_neurons(
    ray_cluster, tiny_net: Path, single_object_probe: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`dissect --layer units` of a synthetic checkpoint gives each image the model's own
    activation, and `eval synthetic --through model` explains and scores the units from it."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.dissect.pipeline import load_activations
    from coin_scale.models import ModelSource, build_module, resolve_model
    from coin_scale.probe import scan_probe
    from coin_scale.runtime.dissect import run_dissection
    from coin_scale.storage import Warehouse

    path = save_synthetic_model(tmp_path / "synthetic.pt", UNITS, tiny_net, noise_seed=1)
    config = DissectConfig(
        model=str(path), layer="units", probe=str(single_object_probe),
        warehouse=str(tmp_path / "wh"), top_k=4, batch_size=16, keep_activations=True,
    )  # fmt: skip
    result = run_dissection(config, progress=False)
    assert (result.n_units, result.n_images, result.n_failed) == (3, 48, 0)
    dense = load_activations(Warehouse(str(tmp_path / "wh")), result.dissection_id)
    # stored as what they are: units with known formulas, not a network's neurons
    for table in ("unit_stats", "exemplars"):
        kinds = set(Warehouse(str(tmp_path / "wh")).read(table).column("kind").to_pylist())
        assert kinds == {"synthetic"}, (table, kinds)
    payload = resolve_model(ModelSource(model=str(path)))
    module = build_module(payload)
    probe = scan_probe(str(single_object_probe))
    from PIL import Image

    pixels = torch.stack([payload.preprocess.load(Image.open(im.path)) for im in probe.images])
    with torch.inference_mode():
        direct = module(payload.preprocess.normalize(pixels)).numpy()
    np.testing.assert_allclose(dense.astype(np.float32), direct, atol=2e-3, rtol=2e-3)

    monkeypatch.setenv("COIN_SCALE_CACHE", str(tiny_net.parent))
    spec = tmp_path / "units.yaml"
    spec.write_text("- formula: color=red\n  noise: 0\n- formula: background=sky OR light=dim\n")
    argv = ["eval", "synthetic", "--through", "model", "--spec", str(spec), "--probe",
            str(single_object_probe), "--quantile", "0.7", "--json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["through"] == "model" and report["images"] == 48
    assert report["model"]["attribute_net"] == str(tiny_net)
    assert set(report["model"]["attribute_accuracy"]) == {a for a, _ in head_spec()}
    assert 0.0 <= report["model"]["mean_truth_iou"] <= 1.0
    assert 0 <= report["model"]["beats_truth"] <= 2
    assert [row["kind"] for row in report["summary"]] == ["mono", "or", "all"]
    # Each explanation and each true formula scored on held-out scenes through the model.
    assert report["model"]["scored"] <= 2 and set(report["model"]["truth_auc"]) == {
        "mono",
        "or",
        "all",
    }
    assert all(0.0 <= v <= 1.0 for v in report["model"]["truth_auc"].values())
    assert [u["true_formula"] for u in report["units"]] == [
        "color=red",
        "(background=sky OR light=dim)",
    ]
    # a concept the attribute net cannot see (n_objects varies on a multi-object probe set)
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    spec.write_text("- formula: n_objects=1\n")
    write_probe_set(tmp_path / "multi", ProbeSetParams(n=30, seed=1, size=32), progress=False)
    argv[argv.index("--probe") + 1] = str(tmp_path / "multi")
    assert main([a for a in argv if a != "--json"]) == 2
    err = capsys.readouterr().err
    assert "synthetic unit 0 ('unit-000'): unknown concept 'n_objects=1'" in err
    assert "predicts shape, color" in err


@pytest.mark.slow
def test_an_llm_agent_explains_synthetic_units_and_a_rerun_pays_nothing(
    ray_cluster, tiny_net: Path, single_object_probe: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`eval synthetic --through model --explainer openai`: an agent per unit experiments through
    the synthetic model (the real SDK against a fake server), its label is read back to a formula
    and scored against the truth; a rerun is answered from the request cache."""
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer

    key = "sk-planted-synthetic-0042"
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tiny_net.parent))
    monkeypatch.setenv("OPENAI_API_KEY", key)
    spec = tmp_path / "units.yaml"
    spec.write_text("- formula: color=red\n  noise: 0\n- formula: shape=star\n  noise: 0\n")
    with FakeProviderServer("openai", ExperimenterPolicy(), api_key=key) as server:
        argv = ["eval", "synthetic", "--through", "model", "--spec", str(spec), "--probe",
                str(single_object_probe), "--quantile", "0.7", "--explainer", "openai",
                "--base-url", server.base_url, "--rpm", "6000", "--tpm", "1e9",
                "--llm-cache", str(tmp_path / "llm-cache"), "--json", "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out)
        first = len(server.log)
        assert main(argv) == 0
        again = json.loads(capsys.readouterr().out)
        assert len(server.log) == first  # every request of the rerun came from the cache

    model = report["model"]
    assert model["llm_requests"] == first >= 2 * 3  # exemplars, render, edit, finish per unit
    assert model["llm_cached"] == 0 and again["model"]["llm_cached"] == first
    units = report["units"]
    assert [u["true_formula"] for u in units] == ["color=red", "shape=star"]
    assert all(u["status"] == "ok" and u["reason"] is None for u in units)
    # the agent's own words are kept beside the formula the matcher read from them
    assert all(u["label"] for u in units)
    read = [u for u in units if u["predicted_formula"]]
    assert read, "the matcher read no formula from any agent label"
    assert [u["predicted_formula"] for u in again["units"]] == [
        u["predicted_formula"] for u in units
    ]
    # InterpScore parts for the synthetic units, beside the predictive AUC
    assert set(model["interp_parts"]) <= {"S", "C", "R"} and model["truth_interp_score"]
    assert key not in json.dumps(report)


def test_llm_explainers_need_units_computed_from_pixels(capsys) -> None:
    assert main(["eval", "synthetic", "--n", "4", "--explainer", "openai"]) == 2
    err = capsys.readouterr().err
    assert "add --through model" in err and "Traceback" not in err


def test_a_missing_api_key_stops_before_any_rendering_or_training(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path / "empty-cache"))
    assert main(["eval", "synthetic", "--n", "4", "--through", "model",
                 "--explainer", "openai"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and "Traceback" not in err
    assert not (tmp_path / "empty-cache").exists()  # nothing rendered, no net trained


@pytest.mark.parametrize("explainer", ["clip", "clip-formula"])
def test_eval_synthetic_scores_the_image_text_explainers_with_the_attribute_net_standing_in(
    explainer: str, tiny_net: Path, single_object_probe: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`eval synthetic --explainer clip|clip-formula`: the attribute net reads concept
    probabilities from the rendered scenes' pixels in place of an image-text model, the explainer
    matches units to them, and the offline explainer on the true attributes is the reference."""
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tiny_net.parent))
    spec = tmp_path / "units.yaml"
    spec.write_text("- formula: color=red\n  noise: 0.1\n- formula: background=sky OR light=dim\n")
    argv = ["eval", "synthetic", "--spec", str(spec), "--probe", str(single_object_probe),
            "--quantile", "0.7", "--explainer", explainer, "--no-progress"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scorer"] == str(tiny_net)
    assert set(report["scorer_accuracy"]) == {a for a, _ in head_spec()}
    assert [row["kind"] for row in report["summary"]] == ["mono", "or", "all"]
    assert [row["kind"] for row in report["reference"]] == ["mono", "or", "all"]
    assert report["reference"][-1]["n"] == 2
    for unit in report["units"]:  # each label is read as a formula over the probe's concepts
        assert unit["status"] in ("ok", "empty")
        assert (unit["predicted_formula"] != "") == (unit["status"] == "ok")
        if explainer == "clip" and unit["status"] == "ok":
            assert unit["predicted_formula"] == unit["label"] and "=" in unit["label"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"the attribute net {tiny_net} stands in for the image-text model" in out
    assert "the offline explainer on the probe's true attributes, same units" in out
