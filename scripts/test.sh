#!/usr/bin/env bash
# The whole test suite: install if needed, lint, type-check, then every test (CPU only).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check coin_scale unity_pool tests run_sweep.py || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
