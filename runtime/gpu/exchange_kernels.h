// Kernels of the device expert exchange (device_expert_exchange.h): which received choices this
// rank computes, each origin token's partial sum over them, and the origin's sum of the ranks'
// partials with the shared expert and the residual. Each is one launch on a stream and allocates
// nothing. Float sums use __fadd_rn / __fmul_rn in the order of CombineKernel (elementwise.cu),
// so that with one rank the result is bit-identical to LaunchCombine.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// For every received choice i = g * k + j (g < n_tokens: the step's tokens of every rank, in rank
// order; k choices each): masked[i] = experts[i] when this rank serves it, else n_expert (a
// bucket past the last expert, which the grouped GEMVs skip). Expert e is held by ranks
// replica_ranks[replica_offsets[e] .. replica_offsets[e + 1]); choices of token g go to the
// replica (g mod copies). An expert id outside [0, n_expert) is served by nobody.
struct MaskChoicesParams {
  const int32_t* experts = nullptr;          // device [n_tokens * k]
  const int32_t* replica_offsets = nullptr;  // device [n_expert + 1]
  const int32_t* replica_ranks = nullptr;    // device [copies]
  int n_tokens = 0, k = 0, n_expert = 0, rank = 0;
  int32_t* masked = nullptr;  // device [n_tokens * k]
};
cudaError_t LaunchMaskChoices(const MaskChoicesParams& p, cudaStream_t stream);

// partial[g][c] = sum over j < k in order, of the choices this rank serves (masked[g * k + j] <
// n_expert), of w[g * k + j] * y[slot_pair[g * k + j]][c], summed from 0.0f (0 for a token none
// of whose choices is served here). y: the expert outputs [pairs][n].
struct PartialCombineParams {
  const int32_t* masked = nullptr;     // device [n_tokens * k]
  const int32_t* slot_pair = nullptr;  // device [n_tokens * k]
  const float* w = nullptr;            // device [n_tokens * k]
  const float* y = nullptr;
  float* partial = nullptr;  // device [n_tokens][n]
  int n_tokens = 0, k = 0, n = 0, n_expert = 0;
};
cudaError_t LaunchPartialCombine(const PartialCombineParams& p, cudaStream_t stream);

// x[t][c] += (parts[0][t][c] + parts[1][t][c] + ... in rank order) + shared[t][c] (shared may be
// null). parts: [n_parts][n_tokens][n], this rank's tokens' partial sums from every rank.
struct RankSumParams {
  float* x = nullptr;  // device [n_tokens][n]
  const float* parts = nullptr;
  const float* shared = nullptr;
  int n_parts = 0, n_tokens = 0, n = 0;
};
cudaError_t LaunchRankSum(const RankSumParams& p, cudaStream_t stream);

}  // namespace tritmoe::gpu
