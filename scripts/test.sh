#!/usr/bin/env bash
# README command 2: install what is missing, build loco and its tests, and run the whole suite.
# Safe to run again. Tests make or ship their own tiny data and fetch nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

install_packages
build_loco
say "running the test suite (ctest)"
ctest --test-dir build --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" --timeout 900
