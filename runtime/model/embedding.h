// The vocabulary ends of the model: token embedding lookup and the lm_head.
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "runtime/model/workspace.h"

namespace tritmoe {

// x [n_tokens][table.cols] = the rows tokens[i] of table (any type, decoded exactly). Token ids
// must be in [0, table.rows) (checked by the caller).
void EmbedTokens(const WeightView& table, const int32_t* tokens, int64_t n_tokens, float* x);

// logits [n][output.rows] = output * RmsNorm(x [n][output.cols], norm).
void LmHead(const WeightView& output, const float* norm, float eps, const float* x, int64_t n,
            float* logits, ThreadPool& pool, ActPrecision precision, Workspace& ws);

}  // namespace tritmoe
