// Routed experts in the layout MatMul reads fastest on this CPU (experts/matmul_repack.h): at load,
// each local expert's gate/up/down matrix whose type has a faster CPU layout (IQ1_S -> quads,
// TQ1_0 -> TQ2_0 blocks on AVX-512) is copied into it once; the other matrices are served in place
// from the mapped file. The copies are lossless (the integer dot products are the same; results
// differ from the GGUF layout only by float summation order) and cost RAM: +28% of the IQ1_S
// expert bytes, +22% of the TQ1_0 ones (the mapped pages they came from can be dropped by the
// kernel). Model::Load installs one when ModelOptions::repack_experts is set and no other source
// is given (the expert cache streams experts in the file's layout instead).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "base/thread_pool.h"
#include "experts/matmul_repack.h"
#include "runtime/model/moe.h"

namespace tritmoe {

class RepackedExpertSource : public ExpertSource {
 public:
  // pool: used by Attach for the copies (not kept).
  explicit RepackedExpertSource(ThreadPool* pool) : pool_(pool) {}

  // True when some routed-expert matrix of `weights` has a faster CPU layout than its GGUF one.
  static bool Worthwhile(const ModelConfig& config, const Weights& weights);

  absl::Status Attach(const ModelConfig& config, const Weights& weights) override;
  absl::Status ForEachExpert(int layer, std::span<const int32_t> experts,
                             absl::FunctionRef<void(size_t, const FfnWeights&)> fn) override;

  // Bytes of the copies (the RAM added on top of the mapped file).
  int64_t repacked_bytes() const { return repacked_bytes_; }

 private:
  ThreadPool* pool_;
  // [layer][expert]: the views MatMul reads (copies or the mapped file); empty rows for dense
  // layers, default FfnWeights for non-local experts.
  std::vector<std::vector<FfnWeights>> experts_;
  std::vector<RepackedWeights> copies_;
  int64_t repacked_bytes_ = 0;
};

}  // namespace tritmoe
