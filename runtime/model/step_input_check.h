// The checks every backend's Step makes of one sequence's input before any work (the CPU Model and
// the GpuModel share them; each adds its own: cache identity, cache type, room, step limits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model_config.h"

namespace tritmoe {

// InvalidArgument naming sequence `index` when its KV cache was made for another model (layers,
// latent rank, RoPE width), it brings no tokens, or a token id is outside [0, n_vocab).
absl::Status CheckSequenceTokens(size_t index, const KvCacheConfig& cache,
                                 std::span<const int32_t> tokens, const ModelConfig& config);

}  // namespace tritmoe
