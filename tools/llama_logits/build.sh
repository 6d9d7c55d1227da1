#!/usr/bin/env bash
# Builds llama_logits against the llama.cpp reference peer made by launch/build-llama-cpp.sh.
#
#   tools/llama_logits/build.sh [OUT]      (default OUT: <repo>/build-peer/llama_logits)
#
# Environment: LLAMA_PREFIX (default /opt/tritmoe-llama.cpp), CXX (default g++).
# Prints the path of the binary on stdout. Skips the compile when OUT is newer than the source
# and the llama.cpp stamp.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
prefix="${LLAMA_PREFIX:-/opt/tritmoe-llama.cpp}"
out="${1:-${repo}/build-peer/llama_logits}"
cxx="${CXX:-g++}"

if [[ ! -f "${prefix}/include/llama.h" || ! -e "${prefix}/lib/libllama.so" ]]; then
  echo "llama_logits/build.sh: no llama.cpp build in ${prefix}; run launch/build-llama-cpp.sh ${prefix}" >&2
  exit 1
fi
src="${here}/llama_logits.cc"
stamp="${prefix}/.tritmoe-llama-stamp"
if [[ -x "${out}" && "${out}" -nt "${src}" && "${out}" -nt "${stamp}" && "${out}" -nt "$0" ]]; then
  echo "${out}"
  exit 0
fi
mkdir -p "$(dirname "${out}")"
# libggml/libggml-base are named explicitly: llama.h includes ggml.h and we call ggml_type_name.
"${cxx}" -std=c++17 -O2 -Wall -Wextra -o "${out}.tmp.$$" "${src}" \
  -I"${prefix}/include" -L"${prefix}/lib" \
  -Wl,-rpath,"${prefix}/lib" -lllama -lggml -lggml-base -lpthread
mv -f "${out}.tmp.$$" "${out}"
echo "${out}"
