#include "runtime/model/rope.h"

#include <cmath>

namespace tritmoe {

RopeTable::RopeTable(const RopeConfig& rope, const int64_t* positions, int64_t n_positions)
    : half_(rope.n_rot / 2) {
  cos_.resize(n_positions * half_);
  sin_.resize(n_positions * half_);
  for (int64_t p = 0; p < n_positions; ++p) {
    for (int i = 0; i < half_; ++i) {
      const double theta = rope.Theta(positions[p], i);
      cos_[p * half_ + i] = static_cast<float>(std::cos(theta));
      sin_[p * half_ + i] = static_cast<float>(std::sin(theta));
    }
  }
}

void RopeTable::Apply(int64_t row, float* v) const {
  const float* c = cos_.data() + row * half_;
  const float* s = sin_.data() + row * half_;
  for (int i = 0; i < half_; ++i) {
    const float x0 = v[2 * i];
    const float x1 = v[2 * i + 1];
    v[2 * i] = x0 * c[i] - x1 * s[i];
    v[2 * i + 1] = x0 * s[i] + x1 * c[i];
  }
}

}  // namespace tritmoe
