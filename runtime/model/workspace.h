// Reusable float buffers for the forward pass. Every layer of every step needs the same
// temporaries; allocating them afresh costs new pages and their zeroing (measured: ~40% of a
// small model's step), so each temporary has a named slot that only ever grows.
#pragma once

#include <cstdint>
#include <vector>

namespace tritmoe {

// One slot per temporary that can be live at the same time as another.
enum class Buf {
  // Model::Step
  kX,
  kH,
  kF,
  kSelected,
  // lm_head
  kLmNorm,
  // MlaAttention
  kQ,
  kCq,
  kKvNew,
  kKv,
  kO,
  kQa,
  kIn,
  kRes,
  kOLat,
  kScores,
  kLatT,
  kLat,
  kKNope,
  kV,
  kKeys,
  kVT,
  kQs,
  kOs,
  // TransposedMatMul
  kTransW,
  kTransWT,
  // SwiGluFfn
  kFfnGate,
  kFfnUp,
  // MoeForward
  kRouterLogits,
  kShared,
  kCount,
};

class Workspace {
 public:
  Workspace() : bufs_(static_cast<int>(Buf::kCount)) {}
  // At least n floats, contents unspecified, valid until the next Get of the same slot.
  float* Get(Buf slot, int64_t n) {
    std::vector<float>& v = bufs_[static_cast<int>(slot)];
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    return v.data();
  }

 private:
  std::vector<std::vector<float>> bufs_;
};

}  // namespace tritmoe
