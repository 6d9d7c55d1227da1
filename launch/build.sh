#!/usr/bin/env bash
# Configures and builds TritMoE into build/ (or $BUILD_DIR). Installs dependencies first unless
# TRITMOE_SKIP_DEPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${TRITMOE_SKIP_DEPS:-0} == 1 ]] || bash launch/install-deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja ${CMAKE_ARGS:-} >/dev/null
ninja -C "$build" ${NINJA_ARGS:-}
