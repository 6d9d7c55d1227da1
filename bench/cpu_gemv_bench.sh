#!/usr/bin/env bash
# The CPU GEMV figures of docs/PERF.md (issue 2). The machine's bandwidth moves from minute to
# minute while other processes use it, so the run is made of ROUNDS rounds, each one repetition of
# every selected GEMV benchmark, with read bandwidth measured between rounds: every GEMV figure is
# judged against the bandwidth just before and after it, and the tables give medians over rounds
# (bench/perf_table.py), once over wall-clock time and once over CPU time per thread.
#   bench/cpu_gemv_bench.sh [OUT_DIR] [BENCHMARK_FILTER]
# BUILD_DIR (default build) holds bench_membw and bench_matmul; ROUNDS defaults to 5.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
out="${1:-/tmp/tritmoe-gemv}"
filter="${2:-BM_MatMul/.*/avx512}"
rounds="${ROUNDS:-5}"
json=(--benchmark_out_format=json)
mkdir -p "$out"
rm -f "$out"/membw_*.json "$out"/gemv_*.json
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" | tee "$out/machine.txt"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
files=()
bandwidth() {
  "$build/bench/bench_membw" --benchmark_filter='avx512:1' "${json[@]}" \
    --benchmark_out="$out/membw_$1.json" >/dev/null
  files+=("$out/membw_$1.json")
}
bandwidth 0
for r in $(seq 1 "$rounds"); do
  "$build/bench/bench_matmul" --benchmark_filter="$filter" "${json[@]}" \
    --benchmark_out="$out/gemv_$r.json" >/dev/null
  files+=("$out/gemv_$r.json")
  bandwidth "$r"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
python3 "$root/bench/perf_table.py" "${files[@]}" | tee "$out/table.md"
python3 "$root/bench/perf_table.py" --cpu-time "${files[@]}" | tee "$out/table_cpu.md"
