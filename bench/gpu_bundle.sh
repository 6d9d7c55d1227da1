#!/bin/bash
# gpu_bundle.sh BUILD_DIR OUT_DIR: copies the GPU test and benchmark binaries of BUILD_DIR
# (stripped) and every shared library they need except the C runtime and the CUDA driver into
# OUT_DIR (libraries in OUT_DIR/lib), so that a bare GPU machine runs them with
# LD_LIBRARY_PATH=OUT_DIR/lib. Unlike ../shared/scripts/bundle-libs.sh it also takes MPI and the
# CUDA runtime: the GPU machine has neither on its library path. NCCL (200 MB) stays behind: on
# the GPU machine, add the directory of python3's nvidia.nccl package (bench/gpu_device_run.sh).
set -euo pipefail
build=$1
out=$2
rm -rf "$out"
mkdir -p "$out/lib"
bins=("$build/tritmoe" "$build/tests/gpu/gpu_ops_test" "$build/tests/gpu/gpu_model_test"
      "$build/tests/gpu/gpu_fusion_test"
      "$build/tests/gpu/quant_gemv_test" "$build/bench/gpu_gemv_bench")
[[ -f $build/tests/gpu/nccl_communicator_test ]] && bins+=("$build/tests/gpu/nccl_communicator_test")
[[ -f $build/tests/engine/engine_device_test ]] && bins+=("$build/tests/engine/engine_device_test")
[[ -f $build/tests/gpu/gpu_expert_cache_test ]] && bins+=("$build/tests/gpu/gpu_expert_cache_test")
[[ -f $build/bench/nccl_a2a_bench ]] && bins+=("$build/bench/nccl_a2a_bench")
[[ -f $build/bench/ep_exchange_bench ]] && bins+=("$build/bench/ep_exchange_bench")
[[ -f $build/tests/gpu/device_expert_exchange_test ]] && bins+=("$build/tests/gpu/device_expert_exchange_test")
skip='^(libc|libm|libpthread|libdl|librt|ld-linux|libgcc_s|libstdc\+\+|libcuda|libnccl|linux-vdso)\.'
for b in "${bins[@]}"; do
  cp -L "$b" "$out/"
  strip "$out/$(basename "$b")"
  ldd "$b" | awk '/=>/ {print $3}' | while read -r lib; do
    [[ -f $lib ]] || continue
    name=$(basename "$lib")
    [[ $name =~ $skip ]] && continue
    [[ -f $out/lib/$name ]] || { cp -L "$lib" "$out/lib/" && strip "$out/lib/$name" 2>/dev/null || true; }
  done
done
du -sh "$out"
