// The GPU expert cache: a bounded number of device slots per MoE layer, each holding one routed
// expert's gate ‖ up and down matrices in the GPU tile layout, filled from the host tier (every
// routed expert repacked at load into pinned host memory, GpuLinear with on_device = false) by
// cudaMemcpyAsync on a copy stream of its own. The CPU twin is runtime/store/expert_cache.h (same
// policy, same statistics).
//
// One MoE layer of a step, driven by the model (gpu_model.cc), on the compute stream:
//
//   ASSIGN_OR_RETURN(int rounds, cache.Begin(layer_index, experts, tokens));
//   for (int r = 0; r < rounds; ++r) {
//     ASSIGN_OR_RETURN(GpuExpertSlots s, cache.EnqueueRound(r, compute));
//     ... grouped gate ‖ up and down GEMVs reading s.gate_up / s.down through s.expert_slot ...
//     RETURN_IF_ERROR(cache.EndRound(r, compute));
//   }
//
// Policy (as the CPU cache):
//   * Budget: slots per layer = budget / (one expert of every MoE layer), at least 1; the model
//     runs without a cache when that reaches the layer's expert count.
//   * Begin pins the hits (their slots), then gives each miss a free slot, else the unpinned slot
//     of least LRFU score (eviction_policy.h); when no slot is left it closes the round and starts
//     the next with every slot free to evict (fetch, compute, evict in turn), so a step that needs
//     more experts than there are slots still runs, with the same results.
//   * EnqueueRound issues the round's misses as one batch of copies on the copy stream (after the
//     previous round's compute, whose slots it may overwrite), uploads the round's expert -> slot
//     map (-1: not in this round) and makes the compute stream wait for the copies (and for any
//     prefetch into this layer). Hits cost nothing but the map.
//   * Prefetch(layer_index, experts): the model's prediction for a layer not yet run in this step
//     (the next layer's router applied to the current hidden state), most wanted first; copies
//     the predicted experts that are not resident into free or evictable slots right away (behind
//     the demand copies already queued), never evicting a prefetched expert not yet used.
// Statistics: hits, misses, bytes copied, evictions, prefetches per layer (cache_stats.h);
// stall = the time the compute stream waited for copies (events, read by FinishStep after the
// step's synchronization). Not thread-safe: one model drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/gpu_linear.h"
#include "runtime/gpu/pinned_buffer.h"
#include "runtime/store/cache_stats.h"
#include "runtime/store/eviction_policy.h"

namespace tritmoe::gpu {

struct GpuExpertCacheOptions {
  int64_t budget_bytes = 0;  // > 0
  bool prefetch = false;
  double lrfu_lambda = 0.5;  // in (0, 1]

  absl::Status Validate() const;
};

// One MoE layer's host tier: the stacks of GpuWeights with on_device = false.
struct GpuExpertLayerSource {
  int layer = -1;                      // model layer
  const GpuLinear* gate_up = nullptr;  // [n_expert] x gate ‖ up, tiled, host-only
  const GpuLinear* down = nullptr;     // [n_expert] x down, tiled, host-only
};

// Where one round's experts are: slot arrays (device) and the expert -> slot map (device
// [n_expert], -1 = not in this round), for LinearArgs::slots / expert_slot.
struct GpuExpertSlots {
  const void* gate_up = nullptr;
  const void* down = nullptr;
  const int32_t* expert_slot = nullptr;
};

class GpuExpertCache {
 public:
  // Slots per layer for `budget_bytes` given one expert's bytes (gate ‖ up + down) in each MoE
  // layer: budget / sum, at least 1.
  static int SlotsFor(int64_t budget_bytes, std::span<const int64_t> expert_bytes_per_layer);

  // Allocates every slot (device) and the copy stream on the current device. The sources must
  // outlive the cache; all of one expert count.
  static absl::StatusOr<std::unique_ptr<GpuExpertCache>> Create(
      std::vector<GpuExpertLayerSource> layers, int slots_per_layer,
      const GpuExpertCacheOptions& options);

  int slots_per_layer() const { return slots_; }
  int n_layers() const { return static_cast<int>(layers_.size()); }
  const GpuExpertCacheOptions& options() const { return options_; }
  // Index of model layer `layer` among the cached layers, or -1.
  int IndexOf(int layer) const;

  // Plans layer `li`'s part of a step: experts = the distinct experts its tokens selected
  // (ascending), tokens = the step's tokens (statistics). Returns the number of rounds (>= 1;
  // a round may be empty when experts is). Updates residency and statistics.
  absl::StatusOr<int> Begin(int li, std::span<const int32_t> experts, int64_t tokens);
  absl::StatusOr<GpuExpertSlots> EnqueueRound(int round, cudaStream_t compute);
  absl::Status EndRound(int round, cudaStream_t compute);

  // See the header comment. Call between layers (not inside Begin .. the last EndRound).
  absl::Status Prefetch(int li, std::span<const int32_t> experts);

  bool Resident(int li, int32_t e) const { return layers_[li].slot_of[e] >= 0; }
  // Experts of layer li that the model computed elsewhere (the host CPU) instead of planning
  // them here: counted only.
  void CountCpu(int li, int64_t n) { layers_[li].cpu_experts += n; }
  int64_t cpu_experts() const;  // since ResetStats, all layers
  // Microseconds to copy one expert of the first layer into a slot (median of 3; before use:
  // it writes slot 0 of that layer).
  double MeasureCopyUs();

  // After the step's stream synchronization: adds the stalls of the step's waits.
  void FinishStep();
  // Forgets every resident expert (after a step failed midway: planned copies may not have run).
  void Clear();

  ExpertCacheStats Stats() const;
  void ResetStats();

 private:
  struct Slot {
    int32_t expert = -1;
    bool prefetched_unused = false;
    LrfuScore score;
  };
  struct Layer {
    GpuExpertLayerSource src;
    DeviceBuffer gate_up_slots, down_slots;
    std::vector<Slot> slots;
    std::vector<int32_t> slot_of;  // per expert: its slot or -1
    int64_t clock = 0;
    bool pending_prefetch = false;  // prefetch copies queued that compute has not waited for
    int64_t cpu_experts = 0;
    LayerCacheStats stats;
  };
  struct Copy {
    int32_t expert, slot;
  };
  struct Round {
    std::vector<Copy> copies;
  };
  struct Wait {
    int li;
    CudaEvent *start, *copied;
  };

  GpuExpertCache() = default;
  // A slot for a new entry of layer l: an empty one first, else the least score among slots not
  // `pinned` (and not prefetched-unused when for_prefetch); -1 when none.
  int PickVictim(const Layer& l, const std::vector<bool>& pinned, bool for_prefetch) const;
  // Puts expert e in slot s (evicting its expert, if any) with a fresh score referenced now, and
  // counts the bytes its copy will read.
  void Assign(Layer& l, int s, int32_t e, bool prefetched);
  absl::Status IssueCopies(Layer& l, std::span<const Copy> copies);
  CudaEvent* NextEvent();

  GpuExpertCacheOptions options_;
  int slots_ = 0;
  int n_expert_ = 0;
  int64_t expert_bytes_total_ = 0;  // one expert of every layer
  std::vector<Layer> layers_;
  std::unique_ptr<CudaStream> copy_stream_;
  // The current layer's plan: its rounds and their expert -> slot maps ([round][n_expert], host
  // pinned staging and device).
  int cur_ = -1;
  std::vector<Round> rounds_;
  PinnedBuffer map_host_;
  DeviceBuffer map_dev_;
  CudaEvent round_done_;
  // Events of this step's waits (timed at FinishStep); a pool reused every step.
  std::vector<std::unique_ptr<CudaEvent>> events_;
  size_t events_used_ = 0;
  std::vector<Wait> waits_;
};

}  // namespace tritmoe::gpu
