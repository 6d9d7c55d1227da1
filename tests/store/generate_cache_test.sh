#!/usr/bin/env bash
# End to end: `tritmoe generate` with the expert cache gives the same greedy text as the resident
# run: one slot per layer with prefetch off and on, an unlimited cache over a `tritmoe store`
# server (grpc://), and under mpirun with 2 ranks each holding a bounded cache of its own experts;
# the cache statistics line is printed. A store that is not there is a clear error, not a hang.
# Usage: generate_cache_test.sh TRITMOE_BINARY SOURCE_DIR
set -euo pipefail
bin="$1"
src="$2"
dir="$(mktemp -d)"
store_pid=""
cleanup() {
  if [ -n "$store_pid" ]; then kill "$store_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

"$bin" gen-model --config tiny --recipe ud-1.58 --layers 4 --out "$dir/m.gguf" >/dev/null
gen() { "$bin" generate -m "$dir/m.gguf" -p "the expert cache" -n 24 --temp 0 -t 2 "$@"; }
gen >"$dir/resident.txt" 2>"$dir/resident.err"

# One slot per layer (0.01 MiB is below one expert of every layer), prefetch off and on.
for extra in "" "--expert-prefetch"; do
  gen --expert-cache-mb 0.01 $extra >"$dir/cache.txt" 2>"$dir/cache.err"
  cmp "$dir/resident.txt" "$dir/cache.txt" || { echo "FAIL: cache $extra changed the output"; exit 1; }
  grep -q "expert cache: 1 slots/layer" "$dir/cache.err" || { cat "$dir/cache.err"; echo "FAIL: no stats"; exit 1; }
done

# Over gRPC.
"$bin" store --model "$dir/m.gguf" --host 127.0.0.1 --port 0 >"$dir/store.out" &
store_pid=$!
for _ in $(seq 100); do grep -q "serving" "$dir/store.out" 2>/dev/null && break; sleep 0.1; done
port="$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$dir/store.out")"
[ -n "$port" ] || { cat "$dir/store.out"; echo "FAIL: tritmoe store did not start"; exit 1; }
gen --expert-store "grpc://127.0.0.1:$port" >"$dir/grpc.txt" 2>"$dir/grpc.err"
cmp "$dir/resident.txt" "$dir/grpc.txt" || { echo "FAIL: the gRPC store changed the output"; exit 1; }
kill "$store_pid"
wait "$store_pid" || true
store_pid=""

# A store that is not there: a clear error naming it, within the retry budget.
if timeout 60 "$bin" generate -m "$dir/m.gguf" -p x -n 2 --expert-store "grpc://127.0.0.1:$port" \
    >"$dir/gone.txt" 2>"$dir/gone.err"; then
  echo "FAIL: generate succeeded without its store"; exit 1
fi
grep -q "grpc://127.0.0.1:$port" "$dir/gone.err" || { cat "$dir/gone.err"; echo "FAIL: error does not name the store"; exit 1; }

# Two ranks, each with a bounded cache of its own experts.
if command -v mpirun >/dev/null; then
  timeout 300 "$src/tests/mpi/mpirun.sh" -np 2 "$bin" generate -m "$dir/m.gguf" \
    -p "the expert cache" -n 24 --temp 0 -t 1 --expert-cache-mb 0.01 --expert-prefetch \
    >"$dir/np2.txt" 2>"$dir/np2.err"
  cmp "$dir/resident.txt" "$dir/np2.txt" || { cat "$dir/np2.err"; echo "FAIL: np=2 with cache differs"; exit 1; }
  grep -q "expert cache" "$dir/np2.err" || { echo "FAIL: no stats at np=2"; exit 1; }
fi
echo "PASS"
