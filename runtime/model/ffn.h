// The SwiGLU feed-forward block: y = down(silu(gate x) * up x). Used for the dense layers, the
// shared expert and (per expert, over that expert's tokens) the routed experts.
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "runtime/model/weights.h"
#include "runtime/model/workspace.h"

namespace tritmoe {

// x [n_tokens][gate.cols] -> y [n_tokens][down.rows]. One MatMul per matrix over all tokens.
void SwiGluFfn(const FfnWeights& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
               ActPrecision precision, Workspace& ws);

}  // namespace tritmoe
