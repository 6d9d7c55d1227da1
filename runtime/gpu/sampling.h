// Greedy sampling on the GPU: the index of the largest logit of each row, the first on ties
// (std::max_element, the CPU twin).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tritmoe::gpu {

// out[r] = argmax_i logits[r * n + i] for r < n_rows, over i != exclude[r] when exclude is given
// ([n_rows] device ints, -1: none; a token the sampler masks, such as EOS under ignore_eos).
cudaError_t LaunchArgmax(const float* logits, int n_rows, int64_t n, int32_t* out,
                         cudaStream_t stream, const int32_t* exclude = nullptr);

}  // namespace tritmoe::gpu
