// What one rank of an expert-parallel job reads of the model file, and a fingerprint of the file
// that every rank can compare at start without reading the non-local experts.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/expert_placement.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/model_config.h"

namespace tritmoe {

struct RankWeightBytes {
  int64_t replicated = 0;  // every tensor that is not a routed-expert stack
  int64_t experts = 0;     // this rank's routed experts, summed over the MoE layers
  int64_t file = 0;        // all tensor data of the file (every expert)
  int64_t total() const { return replicated + experts; }
};

// Tensor bytes `rank` maps for its weights: every tensor except the routed-expert stacks
// (blk.N.ffn_{gate,up,down}_exps), plus, of those, only the experts placements[N - n_dense_lead]
// puts on `rank`. placements: one per MoE layer.
RankWeightBytes CountRankWeightBytes(const gguf::GgufModel& model, const ModelConfig& config,
                                     const std::vector<ExpertPlacement>& placements, int rank);

// A 64-bit hash of the file's metadata, tensor directory, and the first 4 KiB of every tensor
// outside the routed experts (so two files with the same layout but different weights differ,
// while no rank reads bytes it would not read anyway).
uint64_t ModelFileFingerprint(const gguf::GgufModel& model, const ModelConfig& config);

}  // namespace tritmoe
