#!/bin/bash
# gpu_tests_device_run.sh [CARRY_DIR]: every GPU test binary bench/gpu_bundle.sh put in CARRY_DIR
# (default gpu-carry), run on the GPU machine one after the other, each bounded by `timeout`; the
# gtest verdicts and any failure detail on stdout, the full logs in $OUT. Exit code: the number of
# failed binaries.
set -uo pipefail
carry=${1:-gpu-carry}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
failed=0
for t in gpu_ops_test quant_gemv_test gpu_fusion_test gpu_model_test gpu_expert_cache_test device_expert_exchange_test \
         nccl_communicator_test engine_device_test; do
  [[ -x $carry/$t ]] || { echo "== $t: not in $carry"; continue; }
  start=$SECONDS
  timeout 420 "$carry/$t" >"$out/$t.log" 2>&1
  rc=$?
  echo "== $t rc=$rc in $((SECONDS - start)) s: $(grep -E '^\[  PASSED|^\[  FAILED  \] [0-9]+ test' "$out/$t.log" | tr '\n' ' ')$(grep -cE '^\[  SKIPPED \]' "$out/$t.log") skipped"
  if [[ $rc != 0 ]]; then
    failed=$((failed + 1))
    grep -E "^\[  FAILED|Failure|Expected|Which is|actual|error" "$out/$t.log" | head -30
  fi
done
exit $failed
