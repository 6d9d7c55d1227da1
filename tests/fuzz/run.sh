#!/usr/bin/env bash
# Builds the GGUF reader fuzz target with clang's libFuzzer (+AddressSanitizer, UBSan) into
# build-fuzz/ (or $FUZZ_BUILD_DIR), seeds the corpus with the golden file and a few writer-made
# files, and fuzzes for SECONDS (default 60). Exits non-zero when the fuzzer finds a crash; the
# crashing input is left in build-fuzz/artifacts/.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../.."
out=${FUZZ_BUILD_DIR:-build-fuzz}
cxx=${FUZZ_CXX:-clang++}
mkdir -p "$out/corpus" "$out/artifacts"

lib_srcs=(runtime/gguf/gguf.cc runtime/gguf/gguf_parser.cc runtime/gguf/gguf_model.cc
  runtime/gguf/gguf_summary.cc runtime/gguf/mapped_file.cc experts/quant_type.cc)
# The Debian absl is built by gcc against libstdc++, which clang++ links with as well.
absl_libs=(-labsl_statusor -labsl_status -labsl_cord -labsl_str_format_internal -labsl_strings
  -labsl_strings_internal -labsl_int128 -labsl_raw_logging_internal -labsl_throw_delegate)
flags=(-std=c++20 -I. -g -O1 -fno-omit-frame-pointer)

# Rebuilds when any source is newer than the binary.
stale() {
  local bin=$1; shift
  [[ ! -x $bin ]] && return 0
  [[ -n $(find "$@" runtime/gguf experts/quant_type.h tests/fuzz/run.sh -newer "$bin" \
    -print -quit) ]]
}

if stale "$out/gguf_fuzz" tests/fuzz/gguf_fuzz.cc "${lib_srcs[@]}"; then
  echo "fuzz: building $out/gguf_fuzz"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    tests/fuzz/gguf_fuzz.cc "${lib_srcs[@]}" "${absl_libs[@]}" -o "$out/gguf_fuzz"
fi
if stale "$out/make_seeds" tests/fuzz/make_seeds.cc "${lib_srcs[@]}" runtime/gguf/gguf_writer.cc; then
  echo "fuzz: building $out/make_seeds"
  "$cxx" "${flags[@]}" tests/fuzz/make_seeds.cc "${lib_srcs[@]}" runtime/gguf/gguf_writer.cc \
    "${absl_libs[@]}" -o "$out/make_seeds"
fi

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
"$out/make_seeds" "$seeds"
cp tests/data/gguf/golden_small.gguf "$seeds"/
cp "$seeds"/*.gguf "$out/corpus/"

echo "fuzz: running gguf_fuzz for ${seconds}s on $(ls "$out/corpus" | wc -l) corpus files"
"$out/gguf_fuzz" "$out/corpus" -dict=tests/fuzz/gguf.dict -max_total_time="$seconds" \
  -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" 2>"$out/fuzz.log" || {
  rc=$?
  tail -n 60 "$out/fuzz.log" >&2
  echo "fuzz: FAILED (exit $rc); reproducer in $out/artifacts/" >&2
  exit "$rc"
}
grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$out/fuzz.log" || true
echo "fuzz: no crash in ${seconds}s"
