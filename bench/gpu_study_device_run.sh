#!/bin/bash
# gpu_study_device_run.sh PHASE [CARRY_DIR] [LAYERS]: the scaling study (issue 8) on the GPU machine,
# in two calls that follow each other while the machine stays warm (each under the 10-minute
# limit of one call). CARRY_DIR (default .carry/study) holds `tritmoe` and lib/ (bench/gpu_bundle.sh)
# and llama-src.tar.xz (launch/llama-src-tar.sh).
#   prep:  builds llama.cpp with CUDA into /tmp/llama-cuda (llama-bench, llama-batched-bench; sm_90,
#          no FA kernels) while generating a DeepSeek-V3-shaped ud-1.58 model of LAYERS layers at
#          /tmp/v3-LAYERS.gguf;
#   study: launch/study/study.py --device cuda at one rank over that model, llama.cpp on the same
#          file and GPU beside it; the study folder comes back as $OUT/study.tar.gz (plots and the
#          report are made afterwards on the dev machine: study.py --remodel, scaling_report.py).
set -uo pipefail
phase=${1:?usage: gpu_study_device_run.sh prep|study [CARRY_DIR] [LAYERS]}
carry=${2:-.carry/study}
layers=${3:-6}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
bin=$PWD/$carry/tritmoe
model=/tmp/v3-$layers.gguf
case $phase in
  prep)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
      --format=csv,noheader
    (time "$bin" gen-model --config v3 --recipe ud-1.58 --layers "$layers" -t 4 -o "$model") \
      >"$out/gen.log" 2>&1 &
    gen=$!
    start=$SECONDS
    LLAMA_SRC_TAR=$PWD/$carry/llama-src.tar.xz LLAMA_CUDA=1 LLAMA_JOBS=14 \
      LLAMA_TARGETS="llama ggml llama-bench llama-batched-bench" \
      timeout 480 launch/build-llama-cpp.sh /tmp/llama-cuda >"$out/llama-build.log" 2>&1
    echo "llama.cpp build rc=$? in $((SECONDS - start)) s"
    tail -5 "$out/llama-build.log"
    wait $gen
    echo "gen-model rc=$?"
    tail -3 "$out/gen.log"
    ls -la "$model" /tmp/llama-cuda/bin
    ;;
  study)
    [[ -f $model && -x /tmp/llama-cuda/bin/llama-bench ]] || { echo "run the prep phase first"; exit 2; }
    export PYTHONUNBUFFERED=1
    timeout 540 python3 launch/study/study.py --tritmoe "$bin" --model "$model" --device cuda \
      --ranks 1 --concurrency 1,4,16,64 --input-len 128 --output-len 128 --prompts-per-stream 4 \
      --decode-reps 5 --mpirun "" --llama-bin /tmp/llama-cuda/bin --no-plots \
      --out /tmp/study-gpu 2>&1 | tee "$out/study.log" | grep -v "^\s*$" | tail -40
    echo "study rc=${PIPESTATUS[0]}"
    tar -czf "$out/study.tar.gz" -C /tmp study-gpu
    ;;
  *) echo "unknown phase $phase"; exit 2 ;;
esac
