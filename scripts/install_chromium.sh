#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the report screenshot test (tests/test_report.py).
# Idempotent and quiet: does nothing if /usr/bin/chromium exists; never fails the caller
# (exits 0 with a message when it cannot install, and the test then skips).
set -u

if [ -x /usr/bin/chromium ]; then
    echo "install_chromium: /usr/bin/chromium already present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium: not root; skipping (run as root: apt-get install -y --no-install-recommends chromium)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: apt-get not found; skipping (the report screenshot test will be skipped)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

try_install() {
    apt-get install -y -qq --no-install-recommends chromium >/tmp/install_chromium.log 2>&1
}

# Try with the current package lists first; refresh them only if that fails.
if ! try_install; then
    if ! apt-get update -qq >>/tmp/install_chromium.log 2>&1 || ! try_install; then
        echo "install_chromium: could not install chromium (see /tmp/install_chromium.log); the screenshot test will be skipped"
        exit 0
    fi
fi

if [ -x /usr/bin/chromium ]; then
    echo "install_chromium: installed $(/usr/bin/chromium --version 2>/dev/null) in $(( $(date +%s) - start )) s"
else
    echo "install_chromium: apt-get succeeded but /usr/bin/chromium is missing; the screenshot test will be skipped"
fi
exit 0
