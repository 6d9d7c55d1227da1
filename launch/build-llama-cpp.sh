#!/usr/bin/env bash
# Build the llama.cpp reference peer into DEST (default /opt/tritmoe-llama.cpp).
#
#   launch/build-llama-cpp.sh [DEST]
#
# The source is the git bundle shipped inside the npm package
# node-llama-cpp@3.21.1 (llama/gitRelease.bundle); `npm pack` downloads the
# tarball without running any install script.  Nothing from llama.cpp is ever
# copied into this repository.
#
# Idempotent: if DEST/.tritmoe-llama-stamp already records the expected commit
# and the same build configuration, the script exits at once.
#
# Environment:
#   LLAMA_CUDA=1        also build the CUDA backend (GPU machine; sm_90, no FA kernels)
#   LLAMA_CUDA_ARCH=90  CUDA architectures when LLAMA_CUDA=1
#   LLAMA_JOBS=2        parallel build jobs (the dev machines are shared: keep 2)
#   LLAMA_TGZ=path      use an already downloaded node-llama-cpp-3.21.1.tgz
#   LLAMA_SRC_TAR=path  build from a source tarball made by launch/llama-src-tar.sh (the same
#                       commit, 7 MB instead of the 35 MB package: for machines without npm or
#                       network, e.g. the GPU device, where the carried tree is size-limited)
#   LLAMA_KEEP_BUILD=1  keep the temporary source/build directory (its path is printed)
#   LLAMA_FORCE=1       rebuild even if the stamp matches
#
# See docs/LLAMA_CPP_PEER.md.
set -euo pipefail

DEST="${1:-/opt/tritmoe-llama.cpp}"
NPM_PKG="node-llama-cpp@3.21.1"
NPM_TGZ_SHA1="f7579ace3d45c8e93856cebbd8671fa43c2eef1b"   # `npm pack` shasum of 3.21.1
EXPECTED_COMMIT="80fb11ac73e66d89eae2c6a91d8a77428fa733ed" # HEAD of llama/gitRelease.bundle
JOBS="${LLAMA_JOBS:-2}"
CUDA="${LLAMA_CUDA:-0}"
CUDA_ARCH="${LLAMA_CUDA_ARCH:-90}"

log() { echo "[build-llama-cpp] $*" >&2; }
die() { echo "[build-llama-cpp] error: $*" >&2; exit 1; }

# --- build configuration (part of the stamp) --------------------------------
# Plain, portable, deterministic CPU numerics:
#  * GGML_NATIVE=OFF: no -march=native; x86-64 baseline + SSE4.2/AVX/AVX2/FMA/F16C/BMI2
#    (ggml's defaults when NATIVE is off), so results do not depend on the host CPU.
#  * no AVX512*, no AVX-VNNI, no AMX, no AVX512-FP16: explicit OFF, and the -mno-* flags
#    below so that no compiler default can turn them on either.
#  * GGML_CPU_REPACK=OFF and GGML_LLAMAFILE=OFF: every matmul goes through the plain
#    ggml_vec_dot_<type> kernels (quantised activations: Q8_K / Q8_0 / Q8_1 as upstream),
#    not through repacked Q4_0_8x8 etc. layouts or tinyBLAS sgemm.
#  * no BLAS, no OpenSSL/curl (no network code needed), OpenMP threads (deterministic
#    per-row work split: the result does not depend on the thread count).
CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=ON
  -DGGML_NATIVE=OFF
  -DGGML_CPU_ALL_VARIANTS=OFF
  -DGGML_BACKEND_DL=OFF
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_SSE42=ON
  -DGGML_AVX_VNNI=OFF
  -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DGGML_CPU_REPACK=OFF
  -DGGML_LLAMAFILE=OFF
  -DGGML_BLAS=OFF
  -DGGML_OPENMP=ON
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=ON
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=OFF
  -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_NUMBER=0
  -DLLAMA_BUILD_COMMIT="${EXPECTED_COMMIT:0:8}"
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
  '-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib'
)
if [[ "${CUDA}" == 1 ]]; then
  CMAKE_ARGS+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH}" -DGGML_CUDA_FA=OFF)
else
  CMAKE_ARGS+=(-DGGML_CUDA=OFF)
fi
# Targets: the libraries plus the handful of tools the team uses.
#   llama-cli needs the server + web UI in this llama.cpp version (LLAMA_BUILD_SERVER);
#   llama-completion is the classic prompt->text CLI and is built instead.
#   LLAMA_TARGETS="llama ggml llama-gguf" builds only the libraries (+ llama-gguf, no llama-common):
#   enough for tools/llama_logits, and skips llama-common (a large part of the compile).
read -r -a TARGETS <<< "${LLAMA_TARGETS:-llama ggml llama-quantize llama-tokenize llama-gguf llama-completion llama-gguf-split}"

# Extra flags: make sure nothing enables AMX / AVX512-FP16 (only if the compiler knows them).
NO_ISA_FLAGS=""
for f in -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -mno-avx512fp16; do
  if echo 'int x;' | "${CC:-cc}" -x c "$f" -c -o /dev/null - 2>/dev/null; then
    NO_ISA_FLAGS+=" $f"
  fi
done
NO_ISA_FLAGS="${NO_ISA_FLAGS# }"

CONFIG_ID="$(printf '%s\n' "${NPM_PKG}" "${EXPECTED_COMMIT}" "${CMAKE_ARGS[@]}" "${NO_ISA_FLAGS}" | sha256sum | cut -c1-16)"
STAMP="${DEST}/.tritmoe-llama-stamp"

# Up to date when the stamp records this commit and configuration and every requested tool is there.
up_to_date() {
  [[ -f "${STAMP}" ]] || return 1
  grep -qx "commit=${EXPECTED_COMMIT}" "${STAMP}" || return 1
  grep -qx "config=${CONFIG_ID}" "${STAMP}" || return 1
  [[ -e "${DEST}/lib/libllama.so" && -e "${DEST}/lib/libggml.so" && -f "${DEST}/include/llama.h" ]] || return 1
  local t
  for t in "${TARGETS[@]}"; do
    [[ "$t" == llama || "$t" == ggml ]] && continue
    [[ -x "${DEST}/bin/$t" ]] || return 1
  done
  return 0
}
if [[ "${LLAMA_FORCE:-0}" != 1 ]] && up_to_date; then
  log "up to date: ${DEST} (llama.cpp ${EXPECTED_COMMIT:0:12}, config ${CONFIG_ID})"
  exit 0
fi

need_tools=(cmake tar)
if [[ -z "${LLAMA_SRC_TAR:-}" ]]; then
  need_tools+=(git sha1sum)
  [[ -n "${LLAMA_TGZ:-}" ]] || need_tools+=(npm)
fi
for t in "${need_tools[@]}"; do
  command -v "$t" >/dev/null || die "missing tool: $t (apt-get install nodejs npm git cmake build-essential)"
done

T0=$(date +%s)
WORK="$(mktemp -d /tmp/tritmoe-llama-build.XXXXXX)"
if [[ "${LLAMA_KEEP_BUILD:-0}" == 1 ]]; then
  log "keeping work dir ${WORK}"
else
  trap 'rm -rf "${WORK}"' EXIT
fi

if [[ -n "${LLAMA_SRC_TAR:-}" ]]; then
  # --- from a source tarball (launch/llama-src-tar.sh checked the package and the commit) ---
  log "source tarball ${LLAMA_SRC_TAR}"
  tar -xJf "${LLAMA_SRC_TAR}" -C "${WORK}"
  [[ -f "${WORK}/llama.cpp/TRITMOE_COMMIT" ]] || die "${LLAMA_SRC_TAR}: no llama.cpp/TRITMOE_COMMIT (not made by launch/llama-src-tar.sh)"
  tar_commit="$(cat "${WORK}/llama.cpp/TRITMOE_COMMIT")"
  [[ "${tar_commit}" == "${EXPECTED_COMMIT}" ]] || die "${LLAMA_SRC_TAR}: commit ${tar_commit} != ${EXPECTED_COMMIT}"
else
  # --- fetch --------------------------------------------------------------------
  if [[ -n "${LLAMA_TGZ:-}" ]]; then
    cp "${LLAMA_TGZ}" "${WORK}/pkg.tgz"
  else
    log "npm pack ${NPM_PKG}"
    (cd "${WORK}" && npm pack --silent "${NPM_PKG}" >/dev/null)
    mv "${WORK}"/node-llama-cpp-*.tgz "${WORK}/pkg.tgz"
  fi
  got_sha1="$(sha1sum "${WORK}/pkg.tgz" | cut -d' ' -f1)"
  [[ "${got_sha1}" == "${NPM_TGZ_SHA1}" ]] || die "package sha1 ${got_sha1} != expected ${NPM_TGZ_SHA1}"
  tar -xzf "${WORK}/pkg.tgz" -C "${WORK}" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json

  # --- clone ----------------------------------------------------------------------
  log "git clone from bundle"
  git clone -q "${WORK}/package/llama/gitRelease.bundle" "${WORK}/llama.cpp" 2>/dev/null \
    || git clone "${WORK}/package/llama/gitRelease.bundle" "${WORK}/llama.cpp"
  git -C "${WORK}/llama.cpp" -c advice.detachedHead=false checkout -q "${EXPECTED_COMMIT}"
  head_commit="$(git -C "${WORK}/llama.cpp" rev-parse HEAD)"
  [[ "${head_commit}" == "${EXPECTED_COMMIT}" ]] || die "bundle HEAD ${head_commit} != ${EXPECTED_COMMIT}"
  # (node-llama-cpp also ships patches/PR-22566.diff; it only touches the no_alloc
  #  memory-breakdown path of the model loader and is deliberately NOT applied.)
fi

# --- configure + build ------------------------------------------------------------
log "configure (${CONFIG_ID}); extra flags: ${NO_ISA_FLAGS:-none}"
cmake -S "${WORK}/llama.cpp" -B "${WORK}/build" "${CMAKE_ARGS[@]}" \
  -DCMAKE_C_FLAGS="${NO_ISA_FLAGS}" -DCMAKE_CXX_FLAGS="${NO_ISA_FLAGS}" \
  > "${WORK}/configure.log" 2>&1 || { tail -50 "${WORK}/configure.log" >&2; die "cmake configure failed"; }
T1=$(date +%s)
log "build -j${JOBS}: ${TARGETS[*]}"
cmake --build "${WORK}/build" -j "${JOBS}" --target "${TARGETS[@]}" \
  > "${WORK}/build.log" 2>&1 || { tail -50 "${WORK}/build.log" >&2; die "build failed"; }
T2=$(date +%s)

# --- install (manual: only the targets we built) -------------------------------------
log "install into ${DEST}"
STAGE="${DEST}.new.$$"
rm -rf "${STAGE}"
mkdir -p "${STAGE}/bin" "${STAGE}/lib" "${STAGE}/include"
B="${WORK}/build/bin"
for t in "${TARGETS[@]}"; do
  [[ "$t" == llama || "$t" == ggml ]] && continue
  [[ -x "${B}/$t" ]] && cp -a "${B}/$t" "${STAGE}/bin/"
done
# shared libraries land in build/bin in llama.cpp's layout (keep the symlink chains)
find "${WORK}/build" \( -name '*.so' -o -name '*.so.*' \) \( -type f -o -type l \) -print0 \
  | xargs -0 -I{} cp -a {} "${STAGE}/lib/"
cp -a "${WORK}/llama.cpp/include/"*.h "${STAGE}/include/"
cp -a "${WORK}/llama.cpp/ggml/include/"*.h "${STAGE}/include/"
# gguf-py (pure Python GGUF reader/writer) is handy for debugging files
cp -a "${WORK}/llama.cpp/gguf-py" "${STAGE}/gguf-py"
cp -a "${WORK}/llama.cpp/LICENSE" "${STAGE}/LICENSE.llama.cpp"
cat > "${STAGE}/.tritmoe-llama-stamp" <<EOF
package=${NPM_PKG}
commit=${EXPECTED_COMMIT}
config=${CONFIG_ID}
cuda=${CUDA}
targets=${TARGETS[*]}
extra_flags=${NO_ISA_FLAGS}
build_seconds=$((T2 - T1))
EOF
printf '%s\n' "${CMAKE_ARGS[@]}" > "${STAGE}/cmake-args.txt"
cp "${WORK}/configure.log" "${STAGE}/configure.log"

[[ -e "${STAGE}/lib/libllama.so" && -e "${STAGE}/lib/libggml.so" ]] || die "install incomplete: no libllama/libggml"
for t in "${TARGETS[@]}"; do
  [[ "$t" == llama || "$t" == ggml ]] && continue
  [[ -x "${STAGE}/bin/$t" ]] || die "install incomplete: no bin/$t"
  if ldd "${STAGE}/bin/$t" | grep -q 'not found'; then die "unresolved libraries in bin/$t"; fi
done

rm -rf "${DEST}.old.$$"
[[ -e "${DEST}" ]] && mv "${DEST}" "${DEST}.old.$$"
mv "${STAGE}" "${DEST}"
rm -rf "${DEST}.old.$$"
log "done: ${DEST} (llama.cpp ${EXPECTED_COMMIT:0:12}); configure $((T1 - T0))s, build $((T2 - T1))s"
