// The host half of the GPU RoPE (rope.h): cos/sin of every (position, pair), computed in double
// and rounded exactly as runtime/model/rope.h's RopeTable does, for upload once per model.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model/model_config.h"

namespace tritmoe::gpu {

// Tables [n_positions][n_rot / 2] for positions 0..n_positions-1.
struct RopeHostTable {
  std::vector<float> cos, sin;
};
RopeHostTable BuildRopeTable(const RopeConfig& rope, int64_t n_positions);

}  // namespace tritmoe::gpu
