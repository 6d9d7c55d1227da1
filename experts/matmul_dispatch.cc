// Run-time choice of the matmul kernel set: the CPU is probed once with __builtin_cpu_supports and
// the three tables are built once, on first use, in function-local statics.
#include <atomic>

#include "absl/strings/str_cat.h"
#include "experts/matmul_isa.h"
#include "experts/matmul_kernels.h"

namespace tritmoe {
namespace {

MatmulIsa DetectIsa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") &&
                      __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("bmi2");
  if (avx512) return MatmulIsa::kAvx512;
  if (avx2) return MatmulIsa::kAvx2;
#endif
  return MatmulIsa::kScalar;
}

std::atomic<int>& ActiveIsaSlot() {
  static std::atomic<int> slot{static_cast<int>(BestSupportedMatmulIsa())};
  return slot;
}

}  // namespace

const char* MatmulIsaName(MatmulIsa isa) {
  switch (isa) {
    case MatmulIsa::kScalar:
      return "scalar";
    case MatmulIsa::kAvx2:
      return "avx2";
    case MatmulIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

MatmulIsa BestSupportedMatmulIsa() {
  static const MatmulIsa best = DetectIsa();
  return best;
}

MatmulIsa ActiveMatmulIsa() {
  return static_cast<MatmulIsa>(ActiveIsaSlot().load(std::memory_order_relaxed));
}

absl::Status SetMatmulIsaForTesting(MatmulIsa isa) {
  if (static_cast<int>(isa) > static_cast<int>(BestSupportedMatmulIsa())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "matmul ISA ", MatmulIsaName(isa),
        " is not supported by this CPU (best: ", MatmulIsaName(BestSupportedMatmulIsa()), ")"));
  }
  ActiveIsaSlot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return absl::OkStatus();
}

namespace matmul_internal {

const KernelTable& KernelsFor(MatmulIsa isa) {
  // Built on first use and kept for the life of the process (trivially destructible pointers).
  static const KernelTable* const tables = [] {
    // The vector Fill functions live in files built with their ISA's flags, so they are only
    // called on CPUs that support it; unsupported levels keep the scalar table.
    auto* t = new KernelTable[3];
    FillScalarKernels(&t[0]);
    t[1] = t[0];
    t[2] = t[0];
    const MatmulIsa best = BestSupportedMatmulIsa();
    if (best >= MatmulIsa::kAvx2) {
      FillAvx2Kernels(&t[1]);
      t[2] = t[1];
    }
    if (best >= MatmulIsa::kAvx512) FillAvx512Kernels(&t[2]);
    return t;
  }();
  return tables[static_cast<int>(isa)];
}

const KernelTable& ActiveKernels() { return KernelsFor(ActiveMatmulIsa()); }

}  // namespace matmul_internal
}  // namespace tritmoe
