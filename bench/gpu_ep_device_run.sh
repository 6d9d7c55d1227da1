#!/bin/bash
# gpu_ep_device_run.sh PHASE [CARRY_DIR] [LAYERS]: expert parallelism over the GPUs of one host
# (issues 6, 7 and 8) on a machine with 2 GPUs, one call per phase (each under the 10-minute limit
# of a call). CARRY_DIR (default gpu-carry) holds what bench/gpu_bundle.sh made.
#   tests  every GPU test binary (bench/gpu_tests_device_run.sh; engine_device_test's np=2 cases
#          then run with one GPU per rank), and `tritmoe devices`;
#   perf   on a DeepSeek-V3-shaped ud-1.58 model of LAYERS layers generated under /tmp:
#          bench-decode --device cuda at np=1 and np=2 (--gpu-exchange nccl and host), batch 1,
#          16, 64, 256; ep_exchange_bench (dispatch + combine on device buffers) at np=2 and
#          np=1, three runs each;
#   cache  on that model, each rank's GPU expert cache capped to what a 24 GiB card leaves (the
#          budget bench-gpu-decode --card-gb 24 derives): bench-decode at np=1 and np=2 (host
#          exchange: the NCCL one takes no cache), batch 1 and 16, prefill 4096;
#   study  launch/study/study.py --device cuda --ranks 1,2 on that model, 3 runs per level, with
#          llama.cpp's CUDA build on the same file and GPUs when CARRY_DIR has llama-src.tar.xz;
#          the study folder comes back as $OUT/study.tar.gz (plots and report afterwards:
#          study.py --remodel, scaling_report.py --splice --gpu-study).
# Each step bounded by `timeout`; logs in $OUT; the compact results last on stdout.
set -uo pipefail
phase=${1:?usage: gpu_ep_device_run.sh tests|perf|cache|study [CARRY_DIR] [LAYERS]}
carry=${2:-gpu-carry}
layers=${3:-6}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
here=$(dirname "${BASH_SOURCE[0]}")
source "$here/gpu_env.sh"
bin=$TRITMOE_BIN
model=/tmp/v3-$layers.gguf
mpi=(tests/mpi/mpirun.sh -np 2)
gen_model() {
  [[ -f $model ]] && return 0
  (time "$bin" gen-model --config v3 --recipe ud-1.58 --layers "$layers" -t 16 -o "$model") \
    >"$out/gen.log" 2>&1
  tail -2 "$out/gen.log"
}
# Rank 0's table of a bench-decode log: the lines from the batch table on.
table() { grep -E "^\||tok/s|ranks:|phase|budget|cache" "$1" | head -${2:-40}; }
# bench_np2 TAG LIMIT ARGS...: bench-decode on 2 ranks once per exchange, each logged and shown.
bench_np2() {
  local tag=$1 limit=$2 x
  shift 2
  for x in "${exchanges[@]}"; do
    timeout "$limit" "${mpi[@]}" "$bin" bench-decode "$@" --gpu-exchange "$x" \
      >"$out/$tag-$x.log" 2>&1
    echo "== $tag, exchange $x: rc=$?"
    table "$out/$tag-$x.log"
  done
}
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
nvidia-smi topo -m | head -4
case $phase in
  tests)
    "$bin" devices
    bash "$here/gpu_tests_device_run.sh" "$carry"
    grep -E "np=2|np=1 on|RelError" "$out/engine_device_test.log" | head -20
    ;;
  perf)
    gen_model
    exchanges=(nccl host)
    args=(-m "$model" --device cuda --batch 1,16,64,256 --prompt 512 --context 64 --tokens 16
          --reps 3)
    timeout 90 "$bin" bench-decode "${args[@]}" >"$out/np1.log" 2>&1
    echo "== np=1 rc=$?"; table "$out/np1.log"
    bench_np2 np2 150 "${args[@]}"
    for run in 1 2 3; do
      for np in 2 1; do
        timeout 60 tests/mpi/mpirun.sh -np $np "$carry/ep_exchange_bench" --iters=25 \
          >"$out/exchange_np${np}_$run.log" 2>&1
        echo "== ep_exchange_bench np=$np run $run: rc=$?"
        grep -v "^#  *$" "$out/exchange_np${np}_$run.log" | tail -16
      done
    done
    ;;
  cache)
    gen_model
    # The 24 GiB card's expert budget for this model (printed by bench-gpu-decode --card-gb).
    timeout 120 "$bin" bench-gpu-decode -m "$model" --card-gb 24 --batch 1 --prompt 64 \
      --context 64 --tokens 8 --reps 1 >"$out/card.log" 2>&1
    mb=$(grep -oP 'budget \K[0-9.]+(?= MiB)' "$out/card.log" | tail -1)
    echo "== 24 GiB card budget: ${mb:-?} MiB per rank"
    if [[ -n $mb ]]; then
      cargs=(-m "$model" --device cuda --batch 1,16 --prompt 4096 --context 64 --tokens 16
             --reps 3 --expert-cache-mb "$mb")
      timeout 150 "$bin" bench-decode "${cargs[@]}" >"$out/cache-np1.log" 2>&1
      echo "== capped np=1 rc=$?"; table "$out/cache-np1.log"
      exchanges=(host)  # the NCCL exchange takes no expert cache
      bench_np2 capped-np2 240 "${cargs[@]}"
    fi
    ;;
  study)
    # llama.cpp's CUDA build beside it when CARRY_DIR has llama-src.tar.xz (launch/llama-src-tar.sh;
    # ~4 minutes on 32 cores), built while the model is generated.
    if [[ -f $carry/llama-src.tar.xz && ! -x /tmp/llama-cuda/bin/llama-bench ]]; then
      (LLAMA_SRC_TAR=$PWD/$carry/llama-src.tar.xz LLAMA_CUDA=1 LLAMA_JOBS=$(nproc) \
        LLAMA_TARGETS="llama ggml llama-bench llama-batched-bench" \
        timeout 360 launch/build-llama-cpp.sh /tmp/llama-cuda >"$out/llama-build.log" 2>&1) &
    fi
    gen_model
    wait
    llama=()
    [[ -x /tmp/llama-cuda/bin/llama-bench ]] && llama=(--llama-bin /tmp/llama-cuda/bin)
    export PYTHONUNBUFFERED=1
    timeout 400 python3 launch/study/study.py --tritmoe "$bin" --model "$model" --device cuda \
      --exchange-bench "$carry/ep_exchange_bench" "${llama[@]}" \
      --ranks 1,2 --concurrency 1,4,16,64 --input-len 128 --output-len 128 \
      --prompts-per-stream 3 --repeat 3 --decode-reps 3 --decode-batches 1,16,64 \
      --a2a-max-tokens 16 --no-plots --out /tmp/study-gpu2 2>&1 |
      tee "$out/study.log" | grep -v "^\s*$" | tail -40
    echo "study rc=${PIPESTATUS[0]}"
    tar -czf "$out/study.tar.gz" -C /tmp study-gpu2
    ;;
  *) echo "unknown phase $phase"; exit 2 ;;
esac
