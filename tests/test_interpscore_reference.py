"""Issue 21: `coin-scale interpscore --compat reference` gives the InterpScore framework's numbers.

The framework's definitions (ernestoBocini/Interpretability-Score: `interpretability_score.py`,
`InterpScore/selectivity.py`, `robustness.py`, `human_alignment.py`, `aggregated_measure.py`)
are written out in `coin_scale.testing.interpscore_reference` from their published text,
independently of coin-scale's scoring code, and compared on trials CSVs built to reach every
branch: levels 1-5, recognised and not, NaN activations, a concept with no perturbed image, a
unit with negative activations, a non-experiment row."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from coin_scale.cli import main
from coin_scale.testing.interpscore_reference import ref_scores

# ---- trials CSVs reaching every branch ---------------------------------------------------------


def make_rows(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    concepts = {"fire": "1", "puppies": "2", "sailboat": "3"}
    for gt in (*concepts, "other"):
        for level in (1, 2, 3, 4, 5):
            if gt == "sailboat" and level != 5:
                continue  # a concept with no perturbed image: R = 0
            for _ in range(int(rng.integers(4, 12))):
                row = {"gt": gt, "level": level, "human": float(rng.random() < 0.7)}
                for name, unit in concepts.items():
                    base = 2.0 if gt == name else 0.3
                    scale = {1: 0.9, 2: 0.7, 3: 1.6, 4: 4.0, 5: 1.0}[level]
                    value = base * scale + rng.normal(0, 0.4)
                    if unit == "2":
                        value = -abs(value)  # a unit whose activations are negative: |.| matters
                    row[unit] = math.nan if rng.random() < 0.08 else value
                rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    units = ["1", "2", "3"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_category", "ground_truth", "level", *[f"activation_{u}" for u in units],
                    "soft_correct"])  # fmt: skip
        for r in rows:
            acts = ["" if math.isnan(r[u]) else repr(r[u]) for u in units]
            w.writerow(["experiment", r["gt"], r["level"], *acts, "True" if r["human"] else "False"])
        w.writerow(["practice", "fire", 5, "9", "9", "9", "True"])  # not an experiment trial


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_mode_gives_the_frameworks_numbers_to_1e_9(tmp_path, seed, capsys):
    rows = make_rows(seed)
    write_rows(tmp_path / "data.csv", rows)
    neuron_map = {"1": "Fire", "2": "Puppies", "3": "Sailboat"}
    (tmp_path / "map.json").write_text(json.dumps(neuron_map))
    out = tmp_path / "results.csv"
    args = ["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out)]
    assert main([*args, "--compat", "reference", "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    lines = out.read_text().splitlines()
    assert lines[0] == "Neuron,Concept,S,C,R,H,InterpScore,Notes"
    got = {r["Neuron"]: r for r in csv.DictReader(lines)}
    want = ref_scores(rows, neuron_map)
    assert set(got) == set(want)
    for unit, w in want.items():
        for part in ("S", "C", "R", "H", "InterpScore"):
            assert float(got[unit][part]) == pytest.approx(w[part], abs=1e-9), (unit, part)
        assert got[unit]["Notes"] == f"Threshold: {w['threshold']:.4f}"
    assert float(got["3"]["R"]) == 0.0  # no perturbed image of the concept
    scores = [float(got[u]["InterpScore"]) for u in [r["Neuron"] for r in csv.DictReader(lines)]]
    assert scores == sorted(scores, reverse=True)  # best first, as the script sorts


def test_the_default_mode_differs_only_where_it_says(tmp_path, capsys):
    rows = make_rows(5)
    write_rows(tmp_path / "data.csv", rows)
    (tmp_path / "map.json").write_text(json.dumps({"1": "fire", "3": "sailboat"}))
    out = tmp_path / "results.csv"
    args = ["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "the framework's script takes the plain mean of S, C = 0, R and H" in printed
    assert "level groups 1,2;3 (the framework's definition)" in printed
    got = {r["unit"]: r for r in csv.DictReader(out.open())}
    want = ref_scores(rows, {"1": "fire", "3": "sailboat"})
    fire = got["1"]
    assert float(fire["R"]) == pytest.approx(want["1"]["R"], abs=1e-6)  # same R (6 digits here)
    assert fire["C"] == "" and fire["parts"] == "S+R+H"
    w = {"S": 0.3, "R": 0.2, "H": 0.2}
    weighted = sum(w[p] * want["1"][p] for p in w) / sum(w.values())
    assert float(fire["InterpScore"]) == pytest.approx(weighted, rel=1e-5)
    # No perturbed image of the concept: R is missing here (0 in the reference mode).
    assert got["3"]["R"] == "" and got["3"]["parts"] == "S+H"

    # The earlier per-level R (level 4 included) is one flag away, and says it is not the framework's.
    assert main([*args, "--robust-groups", "per-level"]) == 0
    assert "level groups per-level (not the framework's 1,2;3)" in capsys.readouterr().out
    per_level = float({r["unit"]: r for r in csv.DictReader(out.open())}["1"]["R"])
    assert per_level != pytest.approx(want["1"]["R"], abs=1e-6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--robust-groups", "1,2;2"], "level 2 is in two groups"),
        (["--robust-groups", "1,x"], "levels must be integers"),
        (["--robust-groups", "1;;3"], "an empty group"),
        (["--robust-groups", "1", "--robust-levels", "1"], "not both"),
        (["--min-p-value", "0"], "--min-p-value must be in (0, 1]"),
    ],
)
def test_bad_robustness_flags_get_one_line(tmp_path, capsys, flags, message):
    write_rows(tmp_path / "data.csv", make_rows(0))
    (tmp_path / "map.json").write_text(json.dumps({"1": "fire"}))
    out = tmp_path / "results.csv"
    code = main(["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out),
                 *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()


def test_the_frameworks_other_flags_are_accepted_and_recorded(tmp_path, capsys):
    write_rows(tmp_path / "data.csv", make_rows(0))
    (tmp_path / "map.json").write_text(json.dumps({"1": "fire"}))
    out, wh = tmp_path / "results.csv", tmp_path / "wh"
    args = ["interpscore", str(tmp_path / "data.csv"), str(tmp_path / "map.json"), str(out)]
    assert main([*args, "--compat", "reference"]) == 0
    plain = out.read_text()
    assert main([*args, "--compat", "reference", "--recognizable-levels", "5",
                 "--min-p-value", "0.01", "--warehouse", str(wh)]) == 0  # fmt: skip
    assert out.read_text() == plain  # as in the framework, no score depends on them
    from coin_scale.storage import run_query

    _, rows = run_query(wh, "SELECT config_json FROM runs")
    config = json.loads(rows[0][0])
    assert config["recognizable_levels"] == [5] and config["min_p_value"] == 0.01
    assert config["compat"] == "reference" and config["robust_groups"] == [[1, 2], [3]]
