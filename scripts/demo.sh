#!/usr/bin/env bash
# The main job on the embedded defaults: no network, no API keys, local Ray, ./demo/warehouse.
# Renders a ground-truth probe set, dissects resnet18's layer4 over it, and queries the result.
set -euo pipefail
cd "$(dirname "$0")/.."
CS=.venv/bin/coin-scale
[ -f demo/probe/attributes.parquet ] || $CS render --n 256 --seed 0 --out demo/probe
$CS dissect --model resnet18 --weights none --layer layer4 --probe demo/probe \
  --warehouse demo/warehouse --top-k 8
$CS query --warehouse demo/warehouse \
  "SELECT s.unit, round(s.threshold, 3) AS q99, e.image_path AS top_image, round(e.activation, 3) AS activation
   FROM unit_stats s JOIN exemplars e USING (dissection_id, unit)
   WHERE e.rank = 0 ORDER BY s.threshold DESC LIMIT 5"
echo "(random weights: these units mean nothing yet; pass --weights default or PATH for a trained model)"
