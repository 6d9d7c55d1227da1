#!/bin/bash
# gpu_nccl_ep_device_run.sh [CARRY_DIR]: one device session for the device expert exchange
# (--gpu-exchange nccl, runtime/gpu/device_expert_exchange.h) on a 2-GPU machine (nvidia-h200-x2;
# on one GPU the np=2 parts skip or are left out). CARRY_DIR holds what bench/gpu_bundle.sh made
# (tritmoe, device_expert_exchange_test, engine_device_test, ep_exchange_bench, libraries).
#   1. device_expert_exchange_test (np=1 bit-identity, 2 ranks as 2 threads on one GPU, kernels);
#   2. engine_device_test: np=1 nccl vs default, np=2 nccl and host vs np=1, flag checks;
#   3. ep_exchange_bench at np=2 (one rank per GPU) and np=1, three runs each (medians).
# Logs go to $OUT (or /tmp/gpu_out); the tables come last on stdout.
set -uo pipefail
carry=${1:-gpu-carry}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
ngpu=$(nvidia-smi -L | wc -l)
nvidia-smi topo -m | head -4
summary() {
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|^\[       OK|Failure|Expected|Which is|rows|bit-identical" \
    "$1" | head -${2:-60}
}
echo "== device_expert_exchange_test"
timeout 300 "$carry/device_expert_exchange_test" >"$out/dex_test.log" 2>&1
echo "rc=$?"; summary "$out/dex_test.log"
echo "== engine_device_test (nccl)"
timeout 500 "$carry/engine_device_test" \
  --gtest_filter='*TwoRanks*:*Nccl*:*GpuExchange*:*CudaOnTwoRanks*' >"$out/engine.log" 2>&1
echo "rc=$?"; summary "$out/engine.log"
for run in 1 2 3; do
  if [[ $ngpu -ge 2 ]]; then
    timeout 120 tests/mpi/mpirun.sh -np 2 "$carry/ep_exchange_bench" --iters=25 \
      >"$out/bench_np2_$run.log" 2>&1
  fi
  timeout 60 tests/mpi/mpirun.sh -np 1 "$carry/ep_exchange_bench" --iters=25 \
    >"$out/bench_np1_$run.log" 2>&1
done
for f in "$out"/bench_np*_*.log; do echo "== $(basename "$f")"; grep -v "^#  *$" "$f" | tail -16; done
