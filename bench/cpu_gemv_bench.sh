#!/usr/bin/env bash
# The CPU GEMV figures of docs/PERF.md (issue 2) in one run, so the ratios share the machine's
# state: read bandwidth, every type's GEMV, read bandwidth again; then the table.
#   bench/cpu_gemv_bench.sh [OUT_DIR] [BENCHMARK_FILTER]
# Medians of 5 repetitions. BUILD_DIR (default build) holds bench_membw and bench_matmul.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
out="${1:-/tmp/tritmoe-gemv}"
filter="${2:-BM_MatMul/.*/avx512}"
reps=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_out_format=json)
mkdir -p "$out"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" | tee "$out/machine.txt"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
"$build/bench/bench_membw" "${reps[@]}" --benchmark_out="$out/membw_before.json" >/dev/null
"$build/bench/bench_matmul" --benchmark_filter="$filter" "${reps[@]}" \
  --benchmark_out="$out/gemv.json" >/dev/null
"$build/bench/bench_membw" "${reps[@]}" --benchmark_out="$out/membw_after.json" >/dev/null
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
python3 "$root/bench/perf_table.py" "$out/membw_before.json" "$out/membw_after.json" \
  "$out/gemv.json" | tee "$out/table.md"
