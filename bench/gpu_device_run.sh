#!/bin/bash
# gpu_device_run.sh [CARRY_DIR] [LAYERS] [BENCH_ARGS...]: one device session on a GPU machine.
# Starts generating a DeepSeek-V3-shaped ud-1.58 model of LAYERS layers under /tmp in the
# background, runs the GPU tests meanwhile, then bench-gpu-decode on the model (with --unfused, then
# fused: before and after in one run). CARRY_DIR holds
# what bench/gpu_bundle.sh made; logs go to $OUT (or /tmp/gpu_out).
set -uo pipefail
carry=${1:-gpu-carry}
layers=${2:-6}
shift 2 || true
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
model=/tmp/v3-$layers.gguf
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
  --format=csv,noheader
(time "$carry/tritmoe" gen-model --config v3 --recipe ud-1.58 --layers "$layers" -t 16 \
  -o "$model") >"$out/gen.log" 2>&1 &
gen=$!
summary() {  # the gtest verdict lines and any failure detail
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|Expected|Which is|actual|model, |error" \
    "$1" | head -${2:-40}
}
for t in gpu_ops_test gpu_fusion_test gpu_model_test quant_gemv_test nccl_communicator_test; do
  [[ -x $carry/$t ]] || continue
  echo "== $t"
  start=$SECONDS
  timeout 240 "$carry/$t" >"$out/$t.log" 2>&1
  echo "rc=$? in $((SECONDS - start)) s"
  summary "$out/$t.log"
done
echo "== gen-model (waiting)"
wait $gen
tail -4 "$out/gen.log"
# Separate small-op kernels first (the "before"), then the fused default, on the same model.
echo "== bench-gpu-decode --unfused"
timeout 200 "$carry/tritmoe" bench-gpu-decode -m "$model" --unfused "$@" 2>&1 |
  tee "$out/bench_unfused.log"
echo "== bench-gpu-decode"
timeout 200 "$carry/tritmoe" bench-gpu-decode -m "$model" "$@" 2>&1 | tee "$out/bench.log"
