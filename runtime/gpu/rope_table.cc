// Host side of rope.h: the cos/sin tables, computed like RopeTable (angles in double, then
// rounded), so that the GPU rotation uses bit-identical factors.
#include <cmath>

#include "runtime/gpu/rope_table.h"

namespace tritmoe::gpu {

RopeHostTable BuildRopeTable(const RopeConfig& rope, int64_t n_positions) {
  const int half = rope.n_rot / 2;
  RopeHostTable t;
  t.cos.resize(n_positions * half);
  t.sin.resize(n_positions * half);
  for (int64_t p = 0; p < n_positions; ++p) {
    for (int i = 0; i < half; ++i) {
      const double theta = rope.Theta(p, i);
      t.cos[p * half + i] = static_cast<float>(std::cos(theta));
      t.sin[p * half + i] = static_cast<float>(std::sin(theta));
    }
  }
  return t;
}

}  // namespace tritmoe::gpu
