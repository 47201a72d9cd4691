#!/usr/bin/env bash
# README command 2: install what is missing, build loco and its tests, and run the whole suite:
# the tests (build/), the unit tests again under AddressSanitizer + UBSan (build-asan/), and a
# 20-second libFuzzer run over the update decoders and the merge (build-fuzz/); docs/hardening.md.
# Safe to run again. Tests make or ship their own tiny data and fetch nothing. LOCO_JOBS=N sets
# the build's parallelism (default: one job per core).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

install_packages chromium  # the status page's browser test (tests/test_status.cpp)
build_loco
build_hardening
jobs=$(nproc 2>/dev/null || echo 2)
say "running the test suite (ctest)"
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900
say "running the unit tests under AddressSanitizer + UBSan (build-asan/)"
ctest --test-dir build-asan --output-on-failure -j "$jobs" -L sanitize --timeout 900
say "fuzzing the update decoders and the sparse merge (build-fuzz/, fuzz/fuzz_update.cpp)"
ctest --test-dir build-fuzz --output-on-failure -L fuzz
