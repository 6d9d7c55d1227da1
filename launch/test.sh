#!/usr/bin/env bash
# Installs dependencies, builds from scratch and runs every test: the unit and end-to-end tests
# under ctest, then the GGUF parser fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install-deps.sh
build=${BUILD_DIR:-build}
BUILD_DIR=$build TRITMOE_SKIP_DEPS=1 bash launch/build.sh
jobs=$(nproc)
(cd "$build" && ctest --output-on-failure -j "$jobs" --timeout 900)
if [[ -f tests/fuzz/run.sh ]]; then
  bash tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"
fi
