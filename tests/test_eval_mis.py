"""MIS: task construction, scoring with similarities whose answers are known, the offline errors
of DreamSim/LPIPS, and `coin-scale eval mis` end to end on a random-weights resnet18."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from coin_scale.cli import main
from coin_scale.errors import ResourceError, UserError
from coin_scale.eval import similarity as sim
from coin_scale.eval.mis import MISConfig, MISTask, build_tasks, score_tasks, task_pools, unit_mis
from coin_scale.testing.similarities import load_mean_colour


def _same_concept(concepts: np.ndarray):
    """A similarity on image ids: 1 when two images share a concept, else 0."""

    def similarity(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        return (concepts[np.asarray(a)][:, None] == concepts[np.asarray(b)][None, :]).astype(float)

    return similarity


def test_tasks_have_the_asked_sizes_and_are_deterministic_for_a_seed():
    acts = np.random.default_rng(0).normal(size=200)
    config = MISConfig(k=9, n=20, quantile=0.2, seed=3)
    tasks = build_tasks(acts, config)
    assert len(tasks) == 20
    assert all(len(t.positive_refs) == 9 and len(t.negative_refs) == 9 for t in tasks)
    assert build_tasks(acts, config) == tasks
    assert build_tasks(acts, MISConfig(k=9, n=20, quantile=0.2, seed=4)) != tasks


def test_references_and_queries_are_disjoint_and_come_from_the_right_quantiles():
    acts = np.random.default_rng(1).normal(size=101)
    config = MISConfig(k=4, n=50, quantile=0.1, seed=0)
    top, bottom = task_pools(acts, config.quantile)
    assert len(top) == len(bottom) == 11  # ceil(0.1 * 101)
    assert acts[top].min() > acts[bottom].max()
    assert set(top) == set(np.argsort(acts)[-11:])
    for t in build_tasks(acts, config):
        pos = [*t.positive_refs, t.positive_query]
        neg = [*t.negative_refs, t.negative_query]
        assert len(set(pos)) == 5 and len(set(neg)) == 5 and not set(pos) & set(neg)
        assert set(pos) <= set(top) and set(neg) <= set(bottom)
        # the references are the most extreme of the task's draws, the query the least
        assert acts[t.positive_query] < acts[list(t.positive_refs)].min()
        assert acts[t.negative_query] > acts[list(t.negative_refs)].max()
        assert list(acts[list(t.positive_refs)]) == sorted(
            acts[list(t.positive_refs)], reverse=True
        )


def test_too_few_images_for_k_and_the_quantile_is_a_clear_error():
    with pytest.raises(ValueError, match=r"too few probe images for MIS: 30 images .* at least 50"):
        build_tasks(np.arange(30.0), MISConfig(k=9, quantile=0.2))
    build_tasks(np.arange(50.0), MISConfig(k=9, quantile=0.2))  # exactly enough


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("k", 0, "k: expected >= 1"), ("n", 0, "n: expected >= 1"),
     ("quantile", 0.6, "quantile: expected in"), ("alpha", -1.0, "alpha: expected")],
)  # fmt: skip
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        MISConfig(**{field: value})


def test_a_monosemantic_unit_scores_one_and_a_random_unit_about_a_half():
    rng = np.random.default_rng(0)
    concepts = rng.integers(0, 4, size=400)
    similarity = _same_concept(concepts)
    ids = list(range(400))
    mono = (concepts == 2) + 0.01 * rng.normal(size=400)  # fires on concept 2 only
    hard = MISConfig(k=9, n=50, quantile=0.2, alpha=None)
    score = unit_mis(mono, ids, similarity, hard)
    assert score.mis == 1.0 and score.accuracy == 1.0 and score.std == 0.0
    noise = rng.normal(size=400)  # ignores the concepts
    score = unit_mis(noise, ids, similarity, MISConfig(k=9, n=400, quantile=0.2, alpha=None))
    assert 0.4 < score.mis < 0.6
    # The default, the reference's soft score sigmoid(0.16 x margin): every task is right, but a
    # similarity in [0, 1] bounds the margin by 2, so the score stays below sigmoid(0.32).
    soft = unit_mis(mono, ids, similarity, MISConfig(k=9, n=50))
    margins = [a.delta_positive - a.delta_negative for a in soft.answers]
    assert soft.accuracy == 1.0 and 0.5 < soft.mis < 1 / (1 + np.exp(-0.32))
    assert soft.mis == pytest.approx(np.mean(1 / (1 + np.exp(-0.16 * np.array(margins)))))


def test_the_defaults_are_the_reference_codes():
    """klindtlab/machine-interpretability MIS.py: K = 9, N = 20 (line 70), quantile 0.1 (line 81),
    sigmoid(alpha (d+ - d-)) (line 129) with alpha 0.16 (line 134)."""
    c = MISConfig()
    assert (c.k, c.n, c.quantile, c.alpha) == (9, 20, 0.1, 0.16)


def test_the_sigmoid_score_is_the_expected_accuracy_of_each_task():
    # two tasks on images 0..5 whose similarity is given outright
    tasks = (
        MISTask(positive_refs=(0,), negative_refs=(1,), positive_query=2, negative_query=3),
        MISTask(positive_refs=(0,), negative_refs=(1,), positive_query=4, negative_query=5),
    )
    table = {(2, 0): 0.9, (2, 1): 0.1, (3, 0): 0.2, (3, 1): 0.8,  # task 1: q+ right, margin 1.4
             (4, 0): 0.3, (4, 1): 0.5, (5, 0): 0.4, (5, 1): 0.4}  # task 2: q- wins, margin -0.2  # fmt: skip

    def similarity(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        return np.array([[table[(q, r)] for r in b] for q in a])

    hard = score_tasks(tasks, list(range(6)), similarity)
    assert [a.correct for a in hard.answers] == [1.0, 0.0] and hard.mis == 0.5
    soft = score_tasks(tasks, list(range(6)), similarity, alpha=2.0)
    expected = [1 / (1 + np.exp(-2.0 * 1.4)), 1 / (1 + np.exp(-2.0 * -0.2))]
    assert [a.p_correct for a in soft.answers] == pytest.approx(expected)
    assert soft.mis == pytest.approx(np.mean(expected)) and soft.accuracy == 0.5


def test_a_similarity_that_cannot_tell_images_apart_scores_a_half():
    def constant(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        return np.ones((len(a), len(b)))

    score = unit_mis(np.arange(100.0), list(range(100)), constant, MISConfig(n=10))
    assert score.mis == 0.5 and all(a.correct == 0.5 for a in score.answers)


def test_a_similarity_of_the_wrong_shape_is_refused():
    tasks = build_tasks(np.arange(100.0), MISConfig(n=3))
    with pytest.raises(ValueError, match="similarity returned shape"):
        score_tasks(tasks, list(range(100)), lambda a, b: np.zeros((1, 1)))


@pytest.mark.parametrize("name", ["dreamsim", "lpips"])
def test_a_missing_similarity_package_is_a_one_line_error_naming_the_extra(name):
    with pytest.raises(ResourceError) as err:
        sim.load_similarity(name)
    text = str(err.value)
    assert f"similarity {name} needs the {name} package" in text
    assert "pip install 'coin-scale[mis]'" in text and "\n" not in text


def test_lpips_without_its_alexnet_weights_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(sim, "_require", lambda package, name: None)
    monkeypatch.setitem(sys.modules, "lpips", object())  # installed, its weights not
    with pytest.raises(ResourceError, match=r"AlexNet weights .*checkpoints/alexnet-owt-7be5be79"):
        sim.load_lpips(str(tmp_path))


def test_an_unknown_similarity_lists_the_valid_ones():
    with pytest.raises(
        UserError, match="unknown similarity 'clip'; expected one of dreamsim, lpips"
    ):
        sim.load_similarity("clip")


def _mean_colour(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
    """A known similarity on PIL images: minus the distance of their mean RGB colours."""
    ma = np.array([np.asarray(im, float).mean(axis=(0, 1)) for im in a])
    mb = np.array([np.asarray(im, float).mean(axis=(0, 1)) for im in b])
    return -np.linalg.norm(ma[:, None] - mb[None, :], axis=-1)


ARGS = ["eval", "mis", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
        "--units", "0-2,7", "--k", "3", "--n", "6", "--quantile", "0.5"]  # fmt: skip


def test_cli_scores_units_and_writes_the_warehouse(
    ray_cluster, probe_dir, tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.setitem(sim.SIMILARITIES, "mean-colour", load_mean_colour)
    caplog.set_level(logging.INFO, logger="coin_scale.runtime.pools")
    warehouse = tmp_path / "wh"
    code = main([*ARGS, "--probe", str(probe_dir), "--similarity", "mean-colour",
                 "--warehouse", str(warehouse), "--run-id", "mis-test"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "MIS of 4 units of resnet18/layer4 over 36 probe images; mean-colour, k 3" in out
    assert "RANDOM weights" in out and "--weights none: the model has RANDOM weights" in caplog.text
    assert "mean MIS: " in out
    # Issue 19, item 7: the similarity ran on a replica of its own, not in this process.
    assert "1 similarity replica(s)" in caplog.text
    lines = [line.split() for line in out.splitlines()]
    units = [row for row in lines if row and row[0] in {"0", "1", "2", "7"}]
    assert [row[0] for row in units] == ["0", "1", "2", "7"]
    assert all(0.0 <= float(row[1]) <= 1.0 for row in units)

    from coin_scale.storage.warehouse import Warehouse

    every = Warehouse(warehouse).read("scores").to_pylist()
    rows = [r for r in every if r["metric"] == "mis"]
    assert sorted(r["unit"] for r in rows) == [0, 1, 2, 7]
    assert {(r["test"], r["metric"], r["layer"], r["k"], r["draws"]) for r in rows} == {
        ("mis", "mis", "layer4", 3, 6)
    }
    # F1, IoU and AUPRC beside MIS: each unit as a detector of its offline explanation's images
    # (the probe's folder labels are its concepts here)
    assert "F1" in out and "AUPRC" in out
    detected = [r for r in every if r["metric"] != "mis"]
    assert {r["metric"] for r in detected} == {"f1", "iou", "auprc"}
    assert all(0.0 <= r["value"] <= 1.0 for r in detected)
    assert all(json.loads(r["details"])["formula"].startswith("label=") or "label=" in
               json.loads(r["details"])["formula"] for r in detected)  # fmt: skip
    mean = float(next(line for line in out.splitlines() if line.startswith("mean MIS")).split()[2])
    assert np.mean([r["value"] for r in rows]) == pytest.approx(mean, abs=1e-3)
    details = json.loads(rows[0]["details"])
    assert details["similarity"] == "mean-colour" and details["random_weights"] is True
    runs = Warehouse(warehouse).read("runs").to_pylist()
    assert [(r["run_id"], r["command"], r["status"]) for r in runs] == [("mis-test", "eval mis", "complete")]


def test_cli_without_dreamsim_fails_fast_with_the_extra(probe_dir, capsys):
    code = main([*ARGS, "--probe", str(probe_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err.startswith("coin-scale eval: error: similarity dreamsim needs the dreamsim package")
    assert "pip install 'coin-scale[mis]'" in err and len(err.splitlines()) == 1


def test_cli_rejects_bad_units_and_too_few_images(probe_dir, monkeypatch, capsys):
    monkeypatch.setitem(sim.SIMILARITIES, "mean-colour", load_mean_colour)
    assert main([*ARGS, "--units", "3-1", "--similarity", "mean-colour"]) == 2
    assert "--units: expected indices like 0-9,12; got '3-1'" in capsys.readouterr().err
    code = main([*ARGS, "--probe", str(probe_dir), "--similarity", "mean-colour", "--k", "30"])
    assert code == 2
    assert "too few probe images for MIS: 36 images" in capsys.readouterr().err


def test_a_unit_that_is_its_concept_detects_it_perfectly():
    """F1, IoU and AUPRC of the offline explanation: 1.0 for a unit that is a concept's indicator,
    lower when its activations also fire on other images."""
    import torch

    from coin_scale.concepts.matrix import ConceptMatrix
    from coin_scale.eval.explained_detection import explained_detections

    rng = np.random.default_rng(0)
    red = np.zeros(200, dtype=bool)
    red[rng.permutation(200)[:40]] = True  # exactly the top 20%: the explainer's mask at 0.8
    star = rng.random(200) < 0.3
    concepts = ConceptMatrix(
        names=("color=red", "shape=star"), matrix=torch.from_numpy(np.stack([red, star]))
    )
    pure = red.astype(np.float32) + 0.01 * rng.random(200).astype(np.float32)
    leaky = pure + (rng.random(200) < 0.1).astype(np.float32) * 1.5
    found = explained_detections(np.stack([pure, leaky], axis=1), concepts, [0, 1], quantile=0.8)
    assert [d.formula for d in found][0] == "color=red"
    first = found[0].detection
    assert first is not None and (first.f1, first.iou, first.auprc) == (1.0, 1.0, 1.0)
    second = found[1].detection
    assert second is not None and second.auprc < 1.0


def test_cli_records_a_run_that_fails_after_it_started(
    ray_cluster, probe_dir, tmp_path, monkeypatch, capsys
):
    """Too few probe images for the tasks is found once the run has started (the model and layer
    are checked, the probe pass done): the `runs` row ends 'failed' with the error, no scores."""
    monkeypatch.setitem(sim.SIMILARITIES, "mean-colour", load_mean_colour)
    warehouse = tmp_path / "wh"
    code = main([*ARGS, "--probe", str(probe_dir), "--similarity", "mean-colour", "--k", "30",
                 "--warehouse", str(warehouse)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "too few probe images for MIS: 36 images" in err

    from coin_scale.storage.warehouse import Warehouse

    (run,) = Warehouse(warehouse).read("runs").to_pylist()
    assert (run["run_id"], run["command"], run["status"], run["layers"]) == (
        "mis-resnet18-layer4-mean-colour", "eval mis", "failed", ["layer4"],
    )  # fmt: skip
    assert run["message"].startswith("eval mis: too few probe images for MIS: 36 images")
    assert run["finished_at"] is not None and Warehouse(warehouse).read("scores").num_rows == 0


def test_cli_writes_nothing_for_a_bad_run_id(probe_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sim.SIMILARITIES, "mean-colour", load_mean_colour)
    code = main([*ARGS, "--probe", str(probe_dir), "--similarity", "mean-colour",
                 "--warehouse", str(tmp_path / "wh"), "--run-id", "../x"])  # fmt: skip
    assert code == 2 and "--run-id '../x' is not a safe path component" in capsys.readouterr().err
    assert not (tmp_path / "wh").exists()


def test_the_probe_pass_on_the_replicas_gives_the_in_process_scores(ray_cluster, probe_dir):
    """Issue 19: MIS's activations are a call on the model replica pool (what `eval mis` does);
    the activations, the images read and so every score are those of the pass in this process."""
    from coin_scale.eval.mis import MISRunConfig, run_mis
    from coin_scale.runtime.pools import replica_opener

    config = MISRunConfig(
        model="resnet18", weights="none", layer="layer4", units=(0, 3, 9), probe=str(probe_dir),
        similarity="mean-colour", mis=MISConfig(k=3, n=6, quantile=0.5),
    )  # fmt: skip
    here = run_mis(config, _mean_colour)
    there = run_mis(config, _mean_colour, open_pool=replica_opener(address=None, replicas=None))
    assert there.n_images == here.n_images == 36  # the corrupt file skipped on both
    assert there.units == here.units == (0, 3, 9)
    for a, b in zip(here.scores, there.scores, strict=True):
        assert a.mis == pytest.approx(b.mis, abs=1e-9) and a.accuracy == pytest.approx(b.accuracy)
        assert [t.correct for t in a.answers] == [t.correct for t in b.answers]


def test_mis_scores_sae_features_with_their_activations_through_the_encoder(
    ray_cluster, probe_dir, tmp_path, monkeypatch, capsys
):
    """Issue 21: `--units sae --sae PATH` scores the SAE's features; their activations are the
    codes a dissection of the same SAE gives (max over space), computed on the replicas."""
    from coin_scale.eval.mis import MISRunConfig, run_mis
    from coin_scale.runtime.pools import replica_opener
    from tests.test_dissect_sae import reference_max_codes, write_sae

    sae_path = write_sae(tmp_path / "layer3.safetensors", "layer3", 256)
    monkeypatch.setitem(sim.SIMILARITIES, "mean-colour", load_mean_colour)
    warehouse = tmp_path / "wh"
    code = main(["eval", "mis", "--model", "resnet18", "--weights", "none", "--layer", "layer3",
                 "--units", "sae", "--sae", str(sae_path), "--select", "0-3,500", "--k", "3",
                 "--n", "6", "--quantile", "0.5", "--probe", str(probe_dir), "--similarity",
                 "mean-colour", "--warehouse", str(warehouse)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    from coin_scale.storage import run_query

    _, rows = run_query(warehouse, "SELECT unit, kind, details FROM scores WHERE metric = 'mis' "
                        "ORDER BY unit")  # fmt: skip
    assert [(u, k) for u, k, _ in rows] == [(0, "sae"), (1, "sae"), (2, "sae"), (3, "sae"),
                                            (500, "sae")]  # fmt: skip
    assert json.loads(rows[0][2])["sae"] == str(sae_path)

    # The tasks are drawn from the features' codes: the same as those of the reference pass.
    config = MISRunConfig(
        model="resnet18", weights="none", layer="layer3", units=(0, 5), unit_kind="sae",
        sae=str(sae_path), probe=str(probe_dir), similarity="mean-colour",
        mis=MISConfig(k=3, n=6, quantile=0.5),
    )  # fmt: skip
    result = run_mis(config, _mean_colour, open_pool=replica_opener(address=None, replicas=None))
    codes = reference_max_codes(probe_dir, sae_path).numpy()
    for unit, score in zip(result.units, result.scores, strict=True):
        want = build_tasks(codes[:, unit], config.mis)
        got = [(a.delta_positive, a.delta_negative) for a in score.answers]
        assert len(got) == len(want) == 6
        assert unit_mis(codes[:, unit], _images(probe_dir), _mean_colour, config.mis).mis == (
            pytest.approx(score.mis, abs=1e-9)
        )

    # A feature past the SAE's width, or --sae without --units sae: one line, exit 2.
    base = ["eval", "mis", "--model", "resnet18", "--weights", "none", "--layer", "layer3",
            "--probe", str(probe_dir), "--similarity", "mean-colour"]  # fmt: skip
    assert main([*base, "--units", "sae", "--sae", str(sae_path), "--select", "512"]) == 2
    assert "has SAE features 0-511" in capsys.readouterr().err
    assert main([*base, "--sae", str(sae_path)]) == 2
    assert "--sae is for --units sae" in capsys.readouterr().err


def _images(probe_dir):
    """The probe's readable images in probe order (as MIS indexes them), as PIL images."""
    from PIL import Image

    from coin_scale.probe import scan_probe

    out = []
    for image in scan_probe(probe_dir).images:
        try:
            with Image.open(image.path) as im:
                out.append(im.convert("RGB"))
        except OSError:
            continue
    return out


class _CountingEmbedder:
    """A stand-in for DreamSim's model: the image's mean colour as its embedding, every image it
    embeds counted (what `DreamSimSimilarity` caches is under test, not DreamSim)."""

    def __init__(self) -> None:
        self.images = 0

    def embed(self, batch):  # noqa: ANN001, ANN201
        self.images += batch.shape[0]
        return batch.mean(dim=(2, 3)) + 1.0


def test_each_probe_image_is_embedded_once_for_all_units():
    """Issue 21: the similarity embeds an image once (by content) however many units' tasks draw
    it, and a copy of an image under another name is the same image."""
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(60)]
    images.append(images[0].copy())  # the same pixels again
    model = _CountingEmbedder()

    def preprocess(im):  # noqa: ANN001, ANN202
        return torch.from_numpy(np.asarray(im, np.float32)).permute(2, 0, 1)[None] / 255

    similarity = sim.DreamSimSimilarity(model, preprocess, "cpu")
    config = MISConfig(k=5, n=10, quantile=0.4)
    scores = [unit_mis(rng.normal(size=61), images, similarity, config) for _ in range(8)]
    assert all(0.0 <= s.mis <= 1.0 for s in scores)
    assert model.images == similarity.embedded <= 60  # never more than the distinct images
    assert similarity.reused > similarity.embedded  # eight units drew from the same images
    fresh = sim.DreamSimSimilarity(_CountingEmbedder(), preprocess, "cpu")
    np.testing.assert_allclose(similarity(images[:7], images[7:20]), fresh(images[:7], images[7:20]),
                               rtol=1e-6)  # fmt: skip
