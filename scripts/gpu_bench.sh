#!/usr/bin/env bash
# The benchmarks that need a GPU (issue 19, item 4), in one JSON file. Run it as soon as a machine
# with a GPU is at hand; it takes under 8 minutes on one H100 (each step is bounded by `timeout`).
#
#   bash scripts/gpu_bench.sh                  # on a GPU: the real sizes, JSON in gpu_bench.json
#   bash scripts/gpu_bench.sh --smoke          # anywhere (CPU): the same steps on tiny sizes, to
#                                              # check the script end to end (CI-sized, ~3 min)
#   OUT=path.json bash scripts/gpu_bench.sh    # where the JSON goes
#
# Steps (each one JSON object under its name; a step that fails is recorded with its error and
# the next one still runs):
#   dissect_bench  resnet152 layer4 probe pass vs bare forward, bf16 autocast on CUDA, batch 256,
#                  on generated 320x240 JPEGs (targets: ratio >= 0.9, >= 3,000 img/s on an H100)
#   layer4_offline a whole resnet152 layer4 (2,048 units) dissected and explained by the offline
#                  explainer over 5,000 rendered probe images, wall time (target <= 60 s)
#   agents_32      `coin-scale bench llm --parts concurrency`: 32 agents against the local fake
#                  server, their measurements on the model replicas
# Random weights throughout (speed does not depend on them); nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=full
if [ "${1:-}" = "--smoke" ]; then MODE=smoke; fi
OUT=${OUT:-gpu_bench.json}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
CS=${COIN_SCALE:-.venv/bin/coin-scale}
[ -x "$CS" ] || CS=coin-scale
WORK=$(mktemp -d -t coin-scale-gpu-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [ "$MODE" = full ]; then
  MODEL=resnet152; BATCH=256; BENCH_IMAGES=5120; REPEATS=2; PROBE_N=5000; SIZE=224; UNITS=32
else
  MODEL=resnet18; BATCH=16; BENCH_IMAGES=64; REPEATS=1; PROBE_N=96; SIZE=64; UNITS=3
fi

# step NAME TIMEOUT_S COMMAND...: the command's stdout (one JSON object) saved as NAME, its wall
# time beside it; a failure is saved as {"error": ...}.
step() {
  local name=$1 limit=$2; shift 2
  local start end rc
  echo "== $name: $*" >&2
  start=$(date +%s.%N)
  timeout "$limit" "$@" >"$WORK/$name.json" 2>"$WORK/$name.err"
  rc=$?
  end=$(date +%s.%N)
  "$PY" - "$WORK/$name.json" "$WORK/$name.err" "$rc" "$start" "$end" <<'EOF'
import json, sys
path, err, rc, start, end = sys.argv[1:]
try:
    body = json.loads(open(path).read() or "null")
except ValueError:
    body = None
if int(rc) != 0 or body is None:
    body = {"error": f"exit {rc}", "stderr_tail": open(err).read()[-2000:]}
json.dump({"result": body, "wall_s": round(float(end) - float(start), 2)}, open(path, "w"))
EOF
  tail -3 "$WORK/$name.err" >&2
}

step dissect_bench 240 "$CS" bench dissect --model "$MODEL" --layer layer4 \
  --batch-size "$BATCH" --images "$BENCH_IMAGES" --repeats "$REPEATS"

# The layer4 run: render the probe set first (not timed: a user renders it once), then time the
# dissection and the offline labels of every unit, Ray start included.
"$CS" render --n "$PROBE_N" --size "$SIZE" --out "$WORK/probe" --no-progress >&2
cat >"$WORK/layer4.sh" <<EOF
"$CS" dissect --model "$MODEL" --weights none --layer layer4 \
  --probe "$WORK/probe" --batch-size "$BATCH" --warehouse "$WORK/wh" --explainer offline \
  --no-progress >&2 && echo '{"dissected_and_explained": true, "probe_images": $PROBE_N}'
EOF
step layer4_offline 300 bash "$WORK/layer4.sh"

step agents_32 240 "$CS" bench llm --parts concurrency --units "$UNITS" \
  --latency 0.3

"$PY" - "$WORK" "$OUT" "$MODE" <<'EOF'
import json, platform, sys
import torch
work, out, mode = sys.argv[1:]
report = {
    "mode": mode,
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or 'unknown'})",
    "torch": torch.__version__,
}
for name in ("dissect_bench", "layer4_offline", "agents_32"):
    report[name] = json.load(open(f"{work}/{name}.json"))
json.dump(report, open(out, "w"), indent=2)
print(json.dumps(report, indent=2))
EOF
echo "wrote $OUT" >&2
