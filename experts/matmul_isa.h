// Which CPU instruction set the quantized matrix products use. The best level the CPU (and OS)
// supports is picked once, at the first MatMul; tests and benchmarks may force a lower one.
#pragma once

#include "absl/status/status.h"

namespace tritmoe {

enum class MatmulIsa {
  kScalar = 0,  // portable C++; the reference the vector kernels are tested against
  kAvx2 = 1,    // AVX2 + FMA + F16C
  kAvx512 = 2,  // AVX-512 F/BW/VL/DQ + VNNI + VBMI, and BMI2
};

const char* MatmulIsaName(MatmulIsa isa);

// The highest level this CPU supports (checked once, cached).
MatmulIsa BestSupportedMatmulIsa();

// The level MatMul uses now: BestSupportedMatmulIsa() unless forced.
MatmulIsa ActiveMatmulIsa();

// Forces the level used by later MatMul calls (process-wide; not for use while other threads run
// MatMul). Fails with InvalidArgument when the CPU does not support `isa`.
absl::Status SetMatmulIsaForTesting(MatmulIsa isa);

}  // namespace tritmoe
