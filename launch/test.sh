#!/usr/bin/env bash
# Installs dependencies, builds from scratch and runs every test: the unit and end-to-end tests
# under ctest, then the GGUF parser fuzz target for a bounded time. The llama.cpp reference peer
# (launch/build-llama-cpp.sh, from the npm package node-llama-cpp) is built first when possible so
# that the comparison tests run; without it they skip. TRITMOE_SKIP_PEER=1 skips that step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install-deps.sh
if [[ ${TRITMOE_SKIP_PEER:-0} != 1 ]]; then
  if bash launch/build-llama-cpp.sh && bash tools/llama_logits/build.sh >/dev/null; then
    echo "test.sh: llama.cpp reference peer ready"
  else
    echo "test.sh: WARNING: llama.cpp reference peer unavailable; its comparison tests will skip"
  fi
fi
build=${BUILD_DIR:-build}
BUILD_DIR=$build TRITMOE_SKIP_DEPS=1 bash launch/build.sh
jobs=$(nproc)
(cd "$build" && ctest --output-on-failure -j "$jobs" --timeout 900)
if [[ -f tests/fuzz/run.sh ]]; then
  bash tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"
fi
