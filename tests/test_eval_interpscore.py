"""InterpScore: its four parts and aggregate as pure functions, and the `interpscore` batch command
on a trials CSV in the InterpScore framework's format."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from coin_scale.cli import main
from coin_scale.errors import UserError
from coin_scale.eval.detection import average_precision, detection
from coin_scale.eval.interpscore import (
    InterpWeights,
    aggregate,
    causality,
    cohens_d,
    human_alignment,
    relative_change,
    robustness,
    selectivity,
    stability,
)
from coin_scale.storage import run_query

# ---- the parts ------------------------------------------------------------------------------


def test_cohens_d_is_the_mean_difference_over_the_pooled_sd():
    x, y = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]
    pooled = math.sqrt((2 * np.var(x, ddof=1) + 3 * np.var(y, ddof=1)) / 5)
    assert cohens_d(x, y) == pytest.approx((2.0 - 1.5) / pooled)
    assert cohens_d([1, 1], [0, 0]) == math.inf
    assert cohens_d([1, 1], [1, 1]) == 0.0


def test_selectivity_is_one_half_without_separation_and_near_one_with_it():
    rng = np.random.default_rng(0)
    same = rng.normal(size=4000)
    assert selectivity(same[:2000], same[2000:]) == pytest.approx(0.5, abs=0.03)
    assert selectivity(rng.normal(5, 1, 200), rng.normal(0, 1, 200)) > 0.99
    assert selectivity(rng.normal(-5, 1, 200), rng.normal(0, 1, 200)) < 0.01
    # Hedges' g for d = 1 with 20 + 20 images: Phi(g / sqrt 2).
    x = np.r_[np.full(10, 1.0), np.full(10, -1.0)] + 1.0
    y = np.r_[np.full(10, 1.0), np.full(10, -1.0)]
    g = cohens_d(x, y) * (1 - 3 / (4 * 40 - 9))
    assert selectivity(x, y) == pytest.approx(0.5 * (1 + math.erf(g / 2)))
    assert selectivity([1.0], [0.0, 1.0]) == 0.5


def test_robustness_scores_each_strength_by_min_of_the_ratio_and_its_inverse():
    clean = [2.0, 2.0]
    assert stability([1.0, 1.0], clean) == pytest.approx(0.5)
    assert stability([4.0, 4.0], clean) == pytest.approx(0.5)
    assert stability([-2.0, 2.0], clean) == pytest.approx(1.0)
    assert robustness(clean, {1: [2.0], 2: [1.0], 3: []}) == pytest.approx(0.75)
    assert robustness(clean, {1: []}) is None


def test_causality_bounds_the_mean_relative_output_change():
    base = np.array([[3.0, 4.0]])
    assert relative_change(np.array([[3.0, 4.0]]), base) == pytest.approx([0.0])
    assert relative_change(np.array([[0.0, 0.0]]), base) == pytest.approx([1.0])
    assert causality([1.0, 1.0], [0.0, 0.0]) == pytest.approx(1 - math.exp(-0.5))
    assert causality([], [1.0]) is None


def test_human_alignment_counts_recognised_images_among_those_that_fire_the_unit():
    acts = [0.1, 0.9, 0.8, 0.7, 0.95]
    humans = [1.0, 1.0, 0.0, math.nan, 1.0]
    assert human_alignment(acts, humans, threshold=0.5) == (pytest.approx(2 / 3), 3)
    assert human_alignment(acts, humans, threshold=2.0) == (0.0, 0)


def test_the_aggregate_renormalises_over_the_measured_parts_and_names_them():
    w = InterpWeights()
    value, used = aggregate({"S": 1.0, "C": 0.0, "R": 0.5, "H": 0.5}, w)
    assert value == pytest.approx(0.3 + 0.1 + 0.1) and used == ("S", "C", "R", "H")
    value, used = aggregate({"S": 1.0, "C": None, "R": 0.5, "H": 0.5}, w)
    assert value == pytest.approx((0.3 + 0.1 + 0.1) / 0.7) and used == ("S", "R", "H")
    assert aggregate({"S": None, "C": None, "R": None, "H": None}, w) == (None, ())


@pytest.mark.parametrize("text", ["0.3 0.3 0.2", "a b c d", "-1 1 1 1", "0 0 0 0"])
def test_bad_weights_are_refused_with_a_clear_error(text):
    with pytest.raises(UserError, match="--weights"):
        InterpWeights.parse(text)


def test_weights_parse_spaces_and_commas():
    assert InterpWeights.parse("0.25,0.25, 0.25 0.25") == InterpWeights(0.25, 0.25, 0.25, 0.25)


def test_detection_metrics_of_a_unit_against_concept_labels():
    acts = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 0, 1, 0])
    d = detection(acts, labels, threshold=0.5)
    # tp 2, fp 1, fn 1
    assert (d.f1, d.iou) == (pytest.approx(4 / 6), pytest.approx(2 / 4))
    # precision at each recall step: 1, 1, then 3/4 at the fourth image.
    assert d.auprc == pytest.approx((1 + 1 + 0.75) / 3)
    assert average_precision(np.array([1.0, 1.0]), np.array([1, 0])) == pytest.approx(0.5)
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([0, 0, 0])) == 0.0


# ---- the batch command ---------------------------------------------------------------------

CONCEPTS = ("fire", "sailboat")


def write_trials(path: Path, *, rows_per_cell: int = 6, drop: str | None = None) -> None:
    """A trials CSV: unit 1 fires for fire (weaker when perturbed), unit 2 fires for nothing;
    humans recognise every clean image and half of the perturbed ones."""
    columns = [
        "trial_category",
        "ground_truth",
        "level",
        "activation_1",
        "activation_2",
        "soft_correct",
    ]
    columns = [c for c in columns if c != drop]
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for concept in CONCEPTS:
            for level in (1, 2, 5):
                for i in range(rows_per_cell):
                    fire = concept == "fire"
                    row = {
                        "trial_category": "experiment",
                        "ground_truth": concept,
                        "level": level,
                        "activation_1": (1.0 if level == 5 else 0.5) if fire else 0.1 * (i % 3),
                        "activation_2": float(rng.uniform(0, 1)),
                        "soft_correct": "True" if level == 5 or i % 2 == 0 else "False",
                    }
                    writer.writerow({k: v for k, v in row.items() if k in columns})


def write_map(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


def test_interpscore_command_scores_units_from_a_trials_csv(tmp_path, capsys):
    write_trials(tmp_path / "data.csv")
    write_map(tmp_path / "map.json", {"1": "Fire", "2": "Sailboat"})
    out = tmp_path / "results.csv"
    rc = main([
        "interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out),
        "--warehouse", str(tmp_path / "wh"), "--run-id", "is1",
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "C not measured" in text and "renormalised" in text
    rows = {r["unit"]: r for r in csv.DictReader(out.open())}
    fire = rows["1"]
    assert float(fire["S"]) == 1.0  # constant 1.0 against 0, 0.1, 0.2: perfectly separated
    assert fire["C"] == "" and fire["parts"] == "S+R+H"
    # Levels 1 and 2, recognised images only: 0.5 vs clean 1.0 -> min(r, 1/r) = 0.5.
    assert float(fire["R"]) == pytest.approx(0.5)
    # Threshold: 0.95 quantile of clean sailboat activations (0..0.2) = 0.2; every fire image is
    # above it; humans recognised 6 clean + 3 + 3 perturbed of 18.
    assert float(fire["threshold"]) == pytest.approx(0.2)
    assert float(fire["H"]) == pytest.approx(12 / 18)
    assert float(fire["InterpScore"]) == pytest.approx(
        (0.3 * 1.0 + 0.2 * 0.5 + 0.2 * 12 / 18) / 0.7
    )
    assert float(fire["f1"]) == 1.0 and float(fire["auprc"]) == 1.0
    assert 0.0 < float(rows["2"]["S"]) < 1.0
    # Best first.
    assert list(rows) == ["1", "2"]

    _, stored = run_query(
        tmp_path / "wh",
        "SELECT metric, value FROM scores WHERE test = 'interpscore' AND unit = 1 ORDER BY metric",
    )
    values = dict(stored)
    assert set(values) == {"S", "R", "H", "interpscore", "f1", "iou", "auprc"}
    assert values["interpscore"] == pytest.approx(float(fire["InterpScore"]), rel=1e-5)
    _, runs = run_query(tmp_path / "wh", "SELECT command, status FROM runs")
    assert runs == [("interpscore", "complete")]


def test_weights_and_levels_flags_change_the_aggregate(tmp_path):
    write_trials(tmp_path / "data.csv")
    write_map(tmp_path / "map.json", {"1": "fire"})
    out = tmp_path / "r.csv"
    args = ["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out)]
    assert main([*args, "--weights", "1", "0", "0", "0"]) == 0
    assert float(next(csv.DictReader(out.open()))["InterpScore"]) == 1.0
    assert main([*args, "--weights", "0 0 1 0", "--robust-levels", "1"]) == 0
    assert float(next(csv.DictReader(out.open()))["InterpScore"]) == pytest.approx(0.5)


def test_a_csv_without_human_answers_reports_h_as_missing(tmp_path):
    write_trials(tmp_path / "data.csv", drop="soft_correct")
    write_map(tmp_path / "map.json", {"1": "fire"})
    out = tmp_path / "r.csv"
    assert (
        main(["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out)]) == 0
    )
    row = next(csv.DictReader(out.open()))
    assert row["H"] == "" and row["parts"] == "S+R" and "H not measured" in row["notes"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: write_trials(d / "data.csv", drop="level"), "lacks column(s) level"),
        (lambda d: (d / "map.json").write_text("{not json"), "not valid JSON"),
        (lambda d: write_map(d / "map.json", ["fire"]), "JSON object"),
        (lambda d: write_map(d / "map.json", {"fire": "fire"}), "unit ids must be integers"),
        (lambda d: write_map(d / "map.json", {"7": "fire"}), "no activation_7 column"),
        (lambda d: write_map(d / "map.json", {"1": "lava"}), "no clean (level 5) images of the concept"),
        (lambda d: (d / "data.csv").unlink(), "does not exist"),
        (lambda d: (d / "data.csv").write_text("trial_category,ground_truth,level,activation_1\nexperiment,fire,x,1\n"),
         "level must be a number"),
    ],
)  # fmt: skip
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, capsys, setup, message):
    write_trials(tmp_path / "data.csv")
    write_map(tmp_path / "map.json", {"1": "fire"})
    setup(tmp_path)
    out = tmp_path / "results.csv"
    rc = main(["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out),
               "--warehouse", str(tmp_path / "wh")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not list((tmp_path / "wh").rglob("*.parquet")) if (tmp_path / "wh").exists() else True


def test_results_go_to_an_existing_directory_only(tmp_path, capsys):
    write_trials(tmp_path / "data.csv")
    write_map(tmp_path / "map.json", {"1": "fire"})
    rc = main(["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"),
               str(tmp_path / "missing" / "r.csv")])  # fmt: skip
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_the_run_row_says_failed_when_the_results_cannot_be_written(tmp_path, capsys):
    """With --warehouse the run is recorded once the inputs are read and scored: 'running', then
    'failed' with the error when the results CSV cannot be written (and no scores are stored)."""
    write_trials(tmp_path / "data.csv")
    write_map(tmp_path / "map.json", {"1": "fire"})
    rc = main(["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"),
               str(tmp_path / "missing" / "r.csv"), "--warehouse", str(tmp_path / "wh"),
               "--run-id", "is-broken"])  # fmt: skip
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    _, runs = run_query(tmp_path / "wh", "SELECT run_id, command, status, message FROM runs")
    assert len(runs) == 1 and runs[0][:3] == ("is-broken", "interpscore", "failed")
    assert runs[0][3].startswith("cannot write ") and "does not exist" in runs[0][3]
    assert run_query(tmp_path / "wh", "SELECT count(*) FROM scores")[1] == [(0,)]
    assert main(["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"),
                 str(tmp_path / "r.csv"), "--warehouse", str(tmp_path / "wh"), "--run-id",
                 "../x"]) == 2  # fmt: skip
    assert "--run-id '../x' is not a safe path component" in capsys.readouterr().err
