// Rotary position embedding with YaRN, as llama.cpp applies it to DeepSeek (formats.md §4.5):
// adjacent pairs (v[2i], v[2i+1]) rotate by the angle RopeConfig::Theta(pos, i); magnitude 1.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model/model_config.h"

namespace tritmoe {

// cos/sin of every pair for a list of positions: [n_positions][n_rot / 2] each. Angles are
// computed in double, then rounded.
class RopeTable {
 public:
  RopeTable(const RopeConfig& rope, const int64_t* positions, int64_t n_positions);

  int half() const { return half_; }
  // Rotates v [n_rot] in place for the position at index row.
  void Apply(int64_t row, float* v) const;

 private:
  int half_;
  std::vector<float> cos_;
  std::vector<float> sin_;
};

}  // namespace tritmoe
