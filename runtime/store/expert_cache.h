// The expert cache: a rank's routed experts held in a fixed number of slots per MoE layer, filled
// from a store (host RAM is the cache on the CPU path; the same policy will drive GPU slots).
//
//   ASSIGN_OR_RETURN(auto cache, ExpertCache::Create(store, layouts, local, {.budget_bytes = b}));
//   RETURN_IF_ERROR(cache->ForEach(layer, experts, [&](size_t i, const ExpertBytes& m) {
//     ... m[0], m[1], m[2]: the gate, up and down matrices of experts[i] ...
//   }));
//
// Policy:
//   * Budget: slots per layer = budget / (one expert of every MoE layer), at least 1 and at most
//     the layer's local experts; 0 = unlimited (every expert keeps its slot once fetched). Slot
//     memory is allocated on first use.
//   * ForEach pins the hits, then fetches the misses that fit in the free (or evictable) slots
//     as one batched store read, hands those experts over, unpins them, and repeats until every
//     expert was handed over: with fewer slots than the layer needs it runs fetch, compute, evict
//     in turn, and the results are the same.
//   * Eviction: least LRFU score (eviction_policy.h) among ready, unpinned slots.
//   * Prefetch (optional): Prefetch(layer, experts) hands a prediction to a background thread
//     that loads the predicted experts one by one into free or evictable slots of that layer. It
//     never evicts a prefetched expert not yet used, stops when the forward pass reaches the
//     layer or a newer prediction arrives, and its failures are only counted: a demand read of
//     the same expert reports the error.
//   * Errors: a failed store read fails the ForEach with the store's message (file or server,
//     tensor, offset), prefixed with the layer and experts; the failed slots are emptied, so no
//     unverified bytes are ever handed out, and the cache stays usable.
// Thread use: ForEach from one thread (the forward pass); Prefetch and Stats from any.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "runtime/store/cache_stats.h"
#include "runtime/store/eviction_policy.h"
#include "runtime/store/expert_store.h"

namespace tritmoe {

// Where one MoE layer's routed experts are in the store: matrix m (0 gate, 1 up, 2 down) of
// expert e is bytes [e * bytes[m], (e + 1) * bytes[m]) of tensor[m].
struct ExpertLayerLayout {
  int layer = -1;  // model layer
  int n_expert = 0;
  std::array<std::string, 3> tensor;
  std::array<uint64_t, 3> bytes{};

  uint64_t expert_bytes() const { return bytes[0] + bytes[1] + bytes[2]; }
};

struct ExpertCacheOptions {
  int64_t budget_bytes = 0;  // 0: unlimited
  bool prefetch = false;
  double lrfu_lambda = 0.5;  // eviction_policy.h; in (0, 1]

  absl::Status Validate() const;
};

// The gate, up and down matrices of one cached expert.
using ExpertBytes = std::array<const uint8_t*, 3>;

class ExpertCache {
 public:
  // store: not owned, must outlive the cache. layers: the MoE layers, ascending. local: one flag
  // per expert (empty = all); only local experts may be asked for.
  static absl::StatusOr<std::unique_ptr<ExpertCache>> Create(ExpertStore* store,
                                                             std::vector<ExpertLayerLayout> layers,
                                                             std::vector<bool> local,
                                                             const ExpertCacheOptions& options);
  ~ExpertCache();  // stops the prefetcher (after its current read)
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // Calls fn(i, bytes of experts[i]) once for each i; bytes valid during the call only. experts:
  // distinct local experts of model layer `layer`. InvalidArgument for an unknown layer or a
  // non-local expert; the store's error for a failed read.
  absl::Status ForEach(int layer, std::span<const int32_t> experts,
                       absl::FunctionRef<void(size_t, const ExpertBytes&)> fn);

  // Starts loading `experts` (most wanted first) of `layer` in the background; replaces any
  // prediction not yet started. No-op without options.prefetch.
  void Prefetch(int layer, std::span<const int32_t> experts);

  // Counts tokens through `layer` (for bytes per token).
  void CountTokens(int layer, int64_t n_tokens);

  ExpertCacheStats Stats() const;
  void ResetStats();
  int slots_per_layer() const { return slots_per_layer_; }
  const ExpertCacheOptions& options() const { return options_; }

 private:
  enum class SlotState { kEmpty, kLoading, kReady };
  struct AlignedDelete {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  struct Slot {
    SlotState state = SlotState::kEmpty;
    int32_t expert = -1;
    int pins = 0;
    bool prefetched_unused = false;  // loaded by the prefetcher, not asked for yet
    LrfuScore score;
    std::unique_ptr<uint8_t[], AlignedDelete> mem;  // slot_bytes, allocated on first use
  };
  struct Layer {
    ExpertLayerLayout layout;
    std::array<uint64_t, 3> offset{};  // of each matrix inside a slot (64-byte aligned)
    uint64_t slot_bytes = 0;
    std::vector<Slot> slots;
    std::vector<int> slot_of;  // per expert: its slot or -1
    int64_t clock = 0;         // ForEach calls on this layer
    LayerCacheStats stats;
  };
  struct PrefetchJob {
    int layer_index = -1;
    std::vector<int32_t> experts;
    int64_t entries = 0;  // entries_ when predicted: stale once the target layer is entered
  };

  ExpertCache() = default;
  absl::StatusOr<int> LayerIndex(int layer) const;
  // A slot for a new entry: empty first, else the ready, unpinned slot of least score (skipping
  // prefetched-unused ones when for_prefetch); -1 when none. Requires mu_.
  int PickVictim(Layer& l, bool for_prefetch) const;
  // Empties slot s (it must be evictable). Requires mu_.
  void Evict(Layer& l, int s);
  ExpertBytes BytesOf(const Layer& l, const Slot& slot) const;
  // Reads the experts assigned to slots into their memory, as one store call.
  absl::Status Load(Layer& l, std::span<const int> slots);
  void PrefetchLoop();

  ExpertStore* store_ = nullptr;
  ExpertCacheOptions options_;
  std::vector<bool> local_;
  int slots_per_layer_ = 0;
  int64_t capacity_bytes_ = 0;
  std::vector<int> index_of_layer_;  // model layer -> index into layers_, or -1

  mutable std::mutex mu_;
  std::condition_variable loaded_;   // a slot left kLoading
  std::condition_variable wake_;     // the prefetcher has work or must stop
  std::vector<Layer> layers_;        // guarded by mu_ (slot memory: by the slot's state and pins)
  std::optional<PrefetchJob> job_;   // the prediction not yet started
  int64_t entries_ = 0;              // ForEach calls so far
  std::vector<int64_t> entered_at_;  // per layer index: entries_ at its last ForEach
  int64_t resident_bytes_ = 0;
  bool stop_ = false;
  std::thread prefetcher_;
};

}  // namespace tritmoe
