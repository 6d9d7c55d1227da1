#!/bin/bash
# gpu_cache_device_run.sh [CARRY_DIR] [LAYERS] [MODE]: one device session for the GPU expert cache
# (issue 7). CARRY_DIR holds what bench/gpu_bundle.sh made plus gpu_expert_cache_test. MODE:
#   tests  gpu_expert_cache_test, gpu_model_test, quant_gemv_test, then a first measurement;
#   perf   gpu_expert_cache_test and engine_device_test's cache cases, then the docs/PERF.md
#          measurements (also prefetch on, and misses computed on the host by the cost model).
# Measurements, on a DeepSeek-V3-shaped ud-1.58 model of LAYERS layers generated under /tmp:
# bench-gpu-decode resident, then with the expert cache capped to what a 24 GiB card leaves after
# the 61-layer model's resident weights (--card-gb 24), prefetch off and on: prefill of 4096
# tokens and decode at batch 1 and 16, hit rate, MiB streamed per token, stall, the pinned H2D
# bandwidth and the PCIe bound. Each step bounded by `timeout`; logs in $OUT; tables last.
set -uo pipefail
carry=${1:-.carry/gc}
layers=${2:-12}
mode=${3:-tests}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
bin=$PWD/$carry/tritmoe
model=/tmp/v3-$layers.gguf
nvidia-smi --query-gpu=name,memory.total,pcie.link.gen.max,pcie.link.width.max,driver_version \
  --format=csv,noheader | tee "$out/gpu.txt"
free -g | head -2
(time "$bin" gen-model --config v3 --recipe ud-1.58 --layers "$layers" -t 16 -o "$model") \
  >"$out/gen.log" 2>&1 &
gen=$!
if [[ $mode == perf ]]; then
  for t in gpu_expert_cache_test gpu_model_test; do
    echo "== $t"
    timeout 120 "$carry/$t" >"$out/$t.log" 2>&1
    echo "rc=$?"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|Expected|Which is|differ|expert_cpu|CPU quantized" \
      "$out/$t.log" | head -30
  done
fi
if [[ $mode == perf && -x $carry/engine_device_test ]]; then
  # generate/logits --device cuda --expert-cache-mb through the Engine (tiny ud-1.58).
  echo "== engine_device_test (cache cases)"
  TRITMOE_BIN=$bin timeout 150 "$carry/engine_device_test" \
    --gtest_filter='*Generate/tiny_ud*:*CudaRejects*' >"$out/engine_device_test.log" 2>&1
  echo "rc=$?"
  grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|^\[       OK|Failure|cache|Expected" \
    "$out/engine_device_test.log" | head -30
fi
if [[ $mode == tests ]]; then
  for t in gpu_expert_cache_test quant_gemv_test gpu_model_test; do
    [[ -x $carry/$t ]] || continue
    echo "== $t"
    start=$SECONDS
    timeout 240 "$carry/$t" >"$out/$t.log" 2>&1
    echo "rc=$? in $((SECONDS - start)) s"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|Expected|Which is|differ" \
      "$out/$t.log" | head -30
  done
fi
echo "== gen-model (waiting)"
wait $gen
tail -3 "$out/gen.log"
ls -la "$model"
common=(--batch 1,16 --prompt 4096 --context 64 --tokens 16 --reps 3)
run() {  # name, extra args
  local name=$1
  shift
  echo "== bench-gpu-decode $name"
  start=$SECONDS
  timeout 240 "$bin" bench-gpu-decode -m "$model" "${common[@]}" "$@" >"$out/bench_$name.log" 2>&1
  echo "rc=$? in $((SECONDS - start)) s"
}
run resident
run card24 --card-gb 24
if [[ $mode == perf ]]; then
  run card24_prefetch --card-gb 24 --expert-prefetch
  run card24_cpu --card-gb 24 --expert-cpu 1
fi
echo
for f in "$out"/bench_*.log; do
  echo "==== $(basename "$f" .log)"
  grep -E "^(model|weights|card budget|expert cache)" "$f"
  sed -n '/^| phase | tokens\/step | ms/,/^$/p' "$f"
  sed -n '/^| phase | tokens\/step | tok\/s | hit/,/^$/p' "$f"
  tail -2 "$f"
done
