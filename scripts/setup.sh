#!/usr/bin/env bash
# Create .venv/ in the project root and install coin-scale with everything it needs.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [--with-mis]
#   --with-mis  also install the MIS similarities (DreamSim, LPIPS: the [mis] extra). Their
#               weights are not packages: DreamSim fetches its checkpoints on first use into
#               ~/.cache/coin-scale/dreamsim (or --similarity-cache DIR) where the network allows.
set -euo pipefail
with_mis=0
for arg in "$@"; do
  case "$arg" in
    --with-mis) with_mis=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --with-mis)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.coin-scale-installed
# The stamp holds the hash of the pyproject.toml it installed: any change to it reinstalls.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing torch==2.14.1 torchvision==0.29.1, ray, pyarrow, duckdb, ... into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
if [ "$with_mis" = 1 ] && ! .venv/bin/python -c "import dreamsim, lpips" 2>/dev/null; then
  echo "==> installing the MIS similarities (dreamsim, lpips) into .venv"
  .venv/bin/python -m pip install -q -e ".[mis]"
fi
.venv/bin/coin-scale --help >/dev/null
echo "==> coin-scale is installed in .venv (activate with: source .venv/bin/activate)"
