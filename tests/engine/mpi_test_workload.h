// The scripted workload two engine MPI tests run: four greedy sequences with prompts of 3, 6, 9 and
// 12 tokens (30 in all) started in step 0, then one token each per step fed back from the previous
// step; sequence 3 is released after step 2 (6 steps, 17 decode tokens in all).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "runtime/engine/engine.h"

namespace tritmoe {

inline constexpr int kWorkloadSteps = 6;
inline constexpr int kWorkloadSequences = 4;

// Step `step` of the workload; next[q] is sequence q's last sampled token. *seqs gets the sequence
// of each item in order (EngineStepResult::tokens[i] belongs to (*seqs)[i]).
inline EngineStep WorkloadStep(int step, const std::array<int32_t, kWorkloadSequences>& next,
                               std::vector<int>* seqs) {
  EngineStep s;
  seqs->clear();
  for (int q = 0; q < kWorkloadSequences; ++q) {
    if (q == 3 && step > 2) continue;
    std::vector<int32_t> in;
    if (step == 0) {
      s.start.push_back({.id = uint64_t(q), .sampling = SamplingParams::Greedy(), .capacity = 64});
      for (int i = 0; i < 3 + 3 * q; ++i) in.push_back((q * 131 + i * 37 + 5) % 1000);
    } else {
      in.push_back(next[q]);
    }
    s.items.push_back({.id = uint64_t(q), .tokens = std::move(in)});
    if (q == 3 && step == 2) s.release.push_back(3);
    seqs->push_back(q);
  }
  return s;
}

}  // namespace tritmoe
