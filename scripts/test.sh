#!/usr/bin/env bash
# The whole test suite: install if needed, lint, type-check, then every test (CPU only).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
bash scripts/install_chromium.sh   # headless Chromium renders the HTML report in a test
# The Unity backend's C# protocol code is compiled and tested with Mono's mcs when it can be
# installed (Debian's mono-mcs); without it those tests skip and say so.
if ! command -v mcs >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "==> installing mono-mcs (C# compiler for the Unity protocol tests)"
  { apt-get install -y -qq --no-install-recommends mono-mcs || { apt-get update -qq && apt-get install -y -qq --no-install-recommends mono-mcs; }; } >/dev/null 2>&1 \
    || echo "mono-mcs could not be installed: the C# tests will skip"
fi
.venv/bin/ruff check coin_scale unity_pool tests run_sweep.py || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
