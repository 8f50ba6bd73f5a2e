#!/usr/bin/env bash
# Create .venv/ in the project root and install coin-scale with everything it needs.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
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
.venv/bin/coin-scale --help >/dev/null
echo "==> coin-scale is installed in .venv (activate with: source .venv/bin/activate)"
