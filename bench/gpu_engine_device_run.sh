#!/bin/bash
# gpu_engine_device_run.sh [CARRY_DIR] [LAYERS]: one device session for `--device cuda` through the
# Engine (issue 6). CARRY_DIR holds what bench/gpu_bundle.sh made (tritmoe, engine_device_test,
# gpu_model_test, shared libraries). In order, each step bounded by `timeout`:
#   1. generates a DeepSeek-V3-shaped ud-1.58 model of LAYERS layers under /tmp (background);
#   2. engine_device_test (logits / greedy generate / serve with --device cuda against the CPU, on
#      generated tiny and small models) and gpu_model_test;
#   3. on the v3 model: bench-gpu-decode (the bare GpuModel) and bench-decode --device cuda (the
#      same steps through the Engine), batch 1, 16, 64;
#   4. serve --device cuda on that model and bench-serve at concurrency 1, 16, 64 against it.
# Logs go to $OUT (or /tmp/gpu_out); the tables come last on stdout.
set -uo pipefail
carry=${1:-gpu-carry}
layers=${2:-6}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
bin=$TRITMOE_BIN
model=/tmp/v3-$layers.gguf
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
  --format=csv,noheader | tee "$out/gpu.txt"
(time "$bin" gen-model --config v3 --recipe ud-1.58 --layers "$layers" -t 8 -o "$model") \
  >"$out/gen.log" 2>&1 &
gen=$!
summary() {  # the gtest verdict lines, the measured agreement and any failure detail
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|^\[       OK|Failure|Expected|Which is|actual|rows|text|serve --device|error" \
    "$1" | head -${2:-60}
}
for t in engine_device_test gpu_model_test; do
  [[ -x $carry/$t ]] || continue
  echo "== $t"
  start=$SECONDS
  timeout 200 "$carry/$t" >"$out/$t.log" 2>&1
  echo "rc=$? in $((SECONDS - start)) s"
  summary "$out/$t.log"
done
echo "== gen-model (waiting)"
wait $gen
tail -3 "$out/gen.log"
args=(--batch 1,16,64 --prompt 512 --context 64 --tokens 32 --reps 5)
echo "== bench-gpu-decode"
timeout 120 "$bin" bench-gpu-decode -m "$model" "${args[@]}" >"$out/bench_gpu.log" 2>&1
echo "rc=$?"
echo "== bench-decode --device cuda"
timeout 120 "$bin" bench-decode -m "$model" --device cuda "${args[@]}" >"$out/bench_engine.log" 2>&1
echo "rc=$?"
echo "== serve --device cuda + bench-serve"
rm -f /tmp/ports.json
"$bin" serve -m "$model" --device cuda --host 127.0.0.1 --port 0 --grpc-port -1 \
  --max-model-len 1024 --max-num-seqs 64 --ports-file /tmp/ports.json >"$out/serve.log" 2>&1 &
srv=$!
for _ in $(seq 600); do [[ -s /tmp/ports.json ]] && break; sleep 0.1; done
port=$(python3 -c 'import json; print(json.load(open("/tmp/ports.json"))["http_port"])' 2>/dev/null)
if [[ -n $port ]]; then
  timeout 150 "$bin" bench-serve --port "$port" -c 1,16,64 --input-len 128 --output-len 64 \
    --prompts-per-stream 2 >"$out/bench_serve.log" 2>&1
  echo "bench-serve rc=$?"
else
  echo "serve did not start"
fi
kill -TERM $srv 2>/dev/null
wait $srv
echo "serve rc=$?"
tail -5 "$out/serve.log"
echo
echo "==== bench-gpu-decode (bare GpuModel)"
head -3 "$out/bench_gpu.log"
sed -n '/^| phase/,/^$/p' "$out/bench_gpu.log"
echo "==== bench-decode --device cuda (Engine)"
head -4 "$out/bench_engine.log"
sed -n '/^| phase/,/^$/p' "$out/bench_engine.log"
tail -4 "$out/bench_engine.log"
echo "==== bench-serve"
cat "$out/bench_serve.log" | head -20
