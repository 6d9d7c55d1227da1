// Which cached expert to evict: LRFU (Lee et al., 2001), one score that mixes recency and
// frequency. Every reference at time t updates crf = 1 + crf * 2^(-lambda * (t - last)); the
// victim is the entry with the smallest crf decayed to now. lambda = 1 ranks almost as LRU,
// lambda -> 0 as LFU; in between, an expert used on many recent steps outlives one used once
// just now, which matters for DeepSeek's balanced routers where static "hot" sets are weak
// (offload-anchors.md §3.2: LFRU beats LRU at half the slots).
#pragma once

#include <cmath>
#include <cstdint>

namespace tritmoe {

struct LrfuScore {
  double crf = 0.0;
  int64_t last = 0;

  void Reference(int64_t now, double lambda) {
    crf = 1.0 + crf * std::exp2(-lambda * static_cast<double>(now - last));
    last = now;
  }
  double At(int64_t now, double lambda) const {
    return crf * std::exp2(-lambda * static_cast<double>(now - last));
  }
};

}  // namespace tritmoe
