"""InterpScore on the framework's published human-experiment data, side by side with the
framework's formulas (issue 21): S, C, R, H and the aggregate per unit, from
`coin-scale interpscore --compat reference`, beside the same numbers from the framework's
definitions written out in `coin_scale.testing.interpscore_reference`, and the largest difference.

    .venv/bin/python scripts/interpscore_reference.py [DATA_DIR]

DATA_DIR holds `joined_experimement_data.csv` and `neuron_label_map.json` (the framework's file
names; default ../shared/data/interpscore). Exit 1 when a part differs by more than 1e-9."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from coin_scale.testing.interpscore_reference import read_trials, ref_scores

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("S", "C", "R", "H", "InterpScore")


def main(argv: list[str]) -> int:
    data = Path(argv[0]) if argv else ROOT.parent / "shared" / "data" / "interpscore"
    trials, mapping = data / "joined_experimement_data.csv", data / "neuron_label_map.json"
    if not trials.is_file() or not mapping.is_file():
        print(f"{data}: needs joined_experimement_data.csv and neuron_label_map.json", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.csv"
        cli = [str(Path(sys.executable).with_name("coin-scale")), "interpscore", str(trials),
               str(mapping), str(out), "--compat", "reference", "--quiet"]  # fmt: skip
        subprocess.run(cli, check=True)
        got = {row["Neuron"]: row for row in csv.DictReader(out.open())}
    want = ref_scores(read_trials(trials), json.loads(mapping.read_text()))
    print(f"{'unit':>6}  {'concept':<16}" + "".join(f"  {p:^23}" for p in PARTS))
    print(f"{'':>6}  {'':<16}" + "".join(f"  {'coin-scale | reference':^23}" for _ in PARTS))
    worst = 0.0
    for unit, row in got.items():
        cells = []
        for p in PARTS:
            a, b = float(row[p]), want[unit][p]
            worst = max(worst, abs(a - b))
            cells.append(f"{a:>10.6f} | {b:<10.6f}")
        print(f"{unit:>6}  {row['Concept'][:16]:<16}" + "".join(f"  {c:^23}" for c in cells))
    print(f"largest difference over {len(got)} units and {len(PARTS)} numbers: {worst:.2e}")
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
