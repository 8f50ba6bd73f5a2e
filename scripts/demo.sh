#!/usr/bin/env bash
# The main job on the embedded defaults: no network, no API keys, local Ray, ./demo/warehouse.
# run_sweep.py trains coin-scale's probe CNN on rendered scenes on first use (cached), renders a
# target image and a probe set with known contents, finds the units that drive the prediction,
# explains them with the offline explainer, and writes the tables and an HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo starts its own local Ray. Ray 2.60 turns token authentication on for a new local
# cluster and logs a warning saying so whenever RAY_AUTH_MODE is unset; choosing that default
# explicitly keeps it (see README.md, "Dissection on Ray") without the warning.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
.venv/bin/python run_sweep.py --warehouse demo/warehouse "$@"
.venv/bin/coin-scale query --warehouse demo/warehouse \
  "SELECT c.class_name, e.unit, e.label, round(e.score, 2) AS iou, round(u.contribution, 3) AS contribution
   FROM class_explanations c
   JOIN units u ON u.run_id = c.run_id AND u.layer = c.layer
   JOIN explanations e ON e.run_id = u.run_id AND e.layer = u.layer AND e.unit = u.unit
   WHERE u.sign = 'positive' AND c.run_id = (SELECT max(run_id) FROM class_explanations)
   ORDER BY u.rank"
