#!/usr/bin/env bash
# The CPU model figures of docs/PERF.md in one run (so the ratios share the machine's state):
# read bandwidth, then tritmoe bench-decode on a `small` ud-1.58 model, then llama.cpp's
# llama-completion on the same file when the peer is installed (docs/LLAMA_CPP_PEER.md).
#   bench/cpu_model_bench.sh [MODEL] [THREADS]
# The model is generated when missing (~2-7 min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
model="${1:-/tmp/tritmoe-bench/small-ud158.gguf}"
threads="${2:-2}"
peer="${LLAMA_CPP_DIR:-/opt/tritmoe-llama.cpp}"

if [[ ! -f "$model" ]]; then
  mkdir -p "$(dirname "$model")"
  "$build/tritmoe" gen-model --config small --recipe ud-1.58 -o "$model"
fi
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== read bandwidth, $threads threads (median of 3)"
"$build/bench/bench_membw" --benchmark_filter="threads:$threads/avx512:1" \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true 2>/dev/null | grep median
echo "== tritmoe bench-decode"
"$build/tritmoe" bench-decode -m "$model" -t "$threads" --batch 1,4,16 --prompt 128 --tokens 16 \
  --reps 5
if [[ -x "$peer/bin/llama-completion" ]]; then
  echo "== llama.cpp $(cat "$peer/cmake-args.txt" | sed -n 's/-DLLAMA_BUILD_COMMIT=//p') (its build flags: $peer/cmake-args.txt)"
  "$peer/bin/llama-completion" -m "$model" -t "$threads" -n 32 --temp 0 -no-cnv --ignore-eos \
    -p "$(printf 'The quick brown fox jumps over the lazy dog. %.0s' {1..12})" 2>&1 |
    grep -E "prompt eval time|  eval time" || true
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
