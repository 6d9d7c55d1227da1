#!/usr/bin/env bash
# Make a source tarball of the llama.cpp reference peer for machines that cannot fetch it (the GPU
# device: no network, a 64 MiB limit on what travels):
#
#   launch/llama-src-tar.sh OUT.tar.xz        # then, there:
#   LLAMA_SRC_TAR=OUT.tar.xz LLAMA_CUDA=1 launch/build-llama-cpp.sh DEST
#
# The source is the commit launch/build-llama-cpp.sh builds, taken from the same npm package
# (sha1-checked) and git bundle, without what no build needs (models/ vocab files, docs/, the web
# UI, benches/, .github/): 7 MB instead of 35. llama.cpp/TRITMOE_COMMIT records the commit, which
# build-llama-cpp.sh checks. Nothing of llama.cpp is kept in this repository.
#   LLAMA_TGZ=path   use an already downloaded node-llama-cpp-3.21.1.tgz
set -euo pipefail
out=${1:?usage: launch/llama-src-tar.sh OUT.tar.xz}
here=$(cd "$(dirname "$0")" && pwd)
pkg=$(sed -n 's/^NPM_PKG="\(.*\)"$/\1/p' "$here/build-llama-cpp.sh")
sha1=$(sed -n 's/^NPM_TGZ_SHA1="\([0-9a-f]*\)".*/\1/p' "$here/build-llama-cpp.sh")
commit=$(sed -n 's/^EXPECTED_COMMIT="\([0-9a-f]*\)".*/\1/p' "$here/build-llama-cpp.sh")
[[ -n $pkg && -n $sha1 && -n $commit ]] || { echo "llama-src-tar: cannot read the package, sha1 and commit from build-llama-cpp.sh" >&2; exit 1; }
work=$(mktemp -d /tmp/tritmoe-llama-src.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [[ -n ${LLAMA_TGZ:-} ]]; then
  cp "$LLAMA_TGZ" "$work/pkg.tgz"
else
  (cd "$work" && npm pack --silent "$pkg" >/dev/null && mv node-llama-cpp-*.tgz pkg.tgz)
fi
got=$(sha1sum "$work/pkg.tgz" | cut -d' ' -f1)
[[ $got == "$sha1" ]] || { echo "llama-src-tar: package sha1 $got != expected $sha1" >&2; exit 1; }
tar -xzf "$work/pkg.tgz" -C "$work" package/llama/gitRelease.bundle
git clone -q "$work/package/llama/gitRelease.bundle" "$work/src" 2>/dev/null
git -C "$work/src" -c advice.detachedHead=false checkout -q "$commit"
mkdir -p "$work/tree"
git -C "$work/src" archive --format=tar --prefix=llama.cpp/ HEAD -- . ':!models' ':!docs' \
  ':!tools/ui' ':!benches' ':!.github' | tar -xf - -C "$work/tree"
echo "$commit" > "$work/tree/llama.cpp/TRITMOE_COMMIT"
tar -cJf "$out" -C "$work/tree" llama.cpp
ls -la "$out"
