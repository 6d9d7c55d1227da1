#include "runtime/gpu/gpu_expert_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace tritmoe::gpu {
namespace {

absl::Status Cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("expert cache: CUDA error in ", what, ": ",
                                          cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                          ")"));
}

}  // namespace

absl::Status GpuExpertCacheOptions::Validate() const {
  if (budget_bytes <= 0) {
    return absl::InvalidArgumentError("GPU expert cache: the budget must be > 0 bytes");
  }
  if (!(lrfu_lambda > 0.0 && lrfu_lambda <= 1.0)) {
    return absl::InvalidArgumentError("GPU expert cache: lrfu_lambda must be in (0, 1]");
  }
  return absl::OkStatus();
}

int GpuExpertCache::SlotsFor(int64_t budget_bytes, std::span<const int64_t> expert_bytes) {
  int64_t all = 0;
  for (int64_t b : expert_bytes) all += b;
  if (all <= 0) return 1;
  return static_cast<int>(std::clamp<int64_t>(budget_bytes / all, 1, int64_t{1} << 30));
}

absl::StatusOr<std::unique_ptr<GpuExpertCache>> GpuExpertCache::Create(
    std::vector<GpuExpertLayerSource> layers, int slots_per_layer,
    const GpuExpertCacheOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (layers.empty()) return absl::InvalidArgumentError("GPU expert cache: no MoE layers");
  if (slots_per_layer < 1) return absl::InvalidArgumentError("GPU expert cache: no slots");
  std::unique_ptr<GpuExpertCache> c(new GpuExpertCache());
  c->options_ = options;
  c->slots_ = slots_per_layer;
  c->n_expert_ = layers[0].gate_up->count();
  c->layers_.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const GpuExpertLayerSource& s = layers[i];
    if (s.gate_up == nullptr || s.down == nullptr || s.gate_up->host_data() == nullptr ||
        s.down->host_data() == nullptr || !s.gate_up->tiled() || !s.down->tiled() ||
        s.gate_up->count() != c->n_expert_ || s.down->count() != c->n_expert_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GPU expert cache: layer ", s.layer, " needs host-only tiled gate_up and down stacks of ",
          c->n_expert_, " experts"));
    }
    Layer& l = c->layers_[i];
    l.src = s;
    l.gate_up_slots = DeviceBuffer(static_cast<size_t>(s.gate_up->matrix_bytes()) * c->slots_);
    l.down_slots = DeviceBuffer(static_cast<size_t>(s.down->matrix_bytes()) * c->slots_);
    l.slots.resize(c->slots_);
    l.slot_of.assign(c->n_expert_, -1);
    l.stats.layer = s.layer;
    c->expert_bytes_total_ += s.gate_up->matrix_bytes() + s.down->matrix_bytes();
  }
  // At most one round per expert: n_expert maps of n_expert entries.
  const size_t map_bytes = sizeof(int32_t) * c->n_expert_ * c->n_expert_;
  c->map_host_ = PinnedBuffer(map_bytes);
  c->map_dev_ = DeviceBuffer(map_bytes);
  c->copy_stream_ = std::make_unique<CudaStream>();
  return c;
}

int GpuExpertCache::IndexOf(int layer) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i].src.layer == layer) return static_cast<int>(i);
  }
  return -1;
}

void GpuExpertCache::Assign(Layer& l, int s, int32_t e, bool prefetched) {
  Slot& slot = l.slots[s];
  if (slot.expert >= 0) {
    l.slot_of[slot.expert] = -1;
    ++l.stats.evictions;
  }
  slot.expert = e;
  slot.prefetched_unused = prefetched;
  slot.score = LrfuScore();
  slot.score.Reference(l.clock, options_.lrfu_lambda);
  l.slot_of[e] = s;
  l.stats.bytes_read += l.src.gate_up->matrix_bytes() + l.src.down->matrix_bytes();
}

int GpuExpertCache::PickVictim(const Layer& l, const std::vector<bool>& pinned,
                               bool for_prefetch) const {
  int best = -1;
  double best_score = 0.0;
  for (int s = 0; s < slots_; ++s) {
    if (pinned[s]) continue;
    const Slot& slot = l.slots[s];
    if (slot.expert < 0) return s;
    if (for_prefetch && slot.prefetched_unused) continue;
    const double score = slot.score.At(l.clock, options_.lrfu_lambda);
    if (best < 0 || score < best_score) best = s, best_score = score;
  }
  return best;
}

absl::StatusOr<int> GpuExpertCache::Begin(int li, std::span<const int32_t> experts,
                                          int64_t tokens) {
  if (li < 0 || li >= n_layers()) {
    return absl::InternalError(absl::StrCat("GPU expert cache: no layer index ", li));
  }
  Layer& l = layers_[li];
  ++l.clock;
  l.stats.tokens += tokens;
  cur_ = li;
  rounds_.assign(1, Round());
  std::vector<bool> pinned(slots_, false);
  // Round maps start empty; hits go into round 0.
  int32_t* maps = reinterpret_cast<int32_t*>(map_host_.get());
  std::fill(maps, maps + n_expert_, -1);
  std::vector<int32_t> misses;
  for (int32_t e : experts) {
    if (e < 0 || e >= n_expert_) {
      return absl::InternalError(absl::StrCat("GPU expert cache: expert ", e, " out of range"));
    }
    const int s = l.slot_of[e];
    if (s < 0) {
      misses.push_back(e);
      continue;
    }
    ++l.stats.hits;
    Slot& slot = l.slots[s];
    if (slot.prefetched_unused) {
      ++l.stats.prefetch_used;
      slot.prefetched_unused = false;
    }
    slot.score.Reference(l.clock, options_.lrfu_lambda);
    pinned[s] = true;
    maps[e] = s;
  }
  for (int32_t e : misses) {
    int s = PickVictim(l, pinned, /*for_prefetch=*/false);
    if (s < 0) {  // every slot serves this round: the rest go to the next
      rounds_.emplace_back();
      std::fill(pinned.begin(), pinned.end(), false);
      maps += n_expert_;
      std::fill(maps, maps + n_expert_, -1);
      s = PickVictim(l, pinned, false);
    }
    Assign(l, s, e, /*prefetched=*/false);
    pinned[s] = true;
    maps[e] = s;
    rounds_.back().copies.push_back({e, s});
    ++l.stats.misses;
  }
  return static_cast<int>(rounds_.size());
}

CudaEvent* GpuExpertCache::NextEvent() {
  if (events_used_ == events_.size()) events_.push_back(std::make_unique<CudaEvent>());
  return events_[events_used_++].get();
}

absl::Status GpuExpertCache::IssueCopies(Layer& l, std::span<const Copy> copies) {
  cudaStream_t cs = copy_stream_->get();
  const int64_t gu = l.src.gate_up->matrix_bytes(), dn = l.src.down->matrix_bytes();
  uint8_t* gu_dst = static_cast<uint8_t*>(l.gate_up_slots.get());
  uint8_t* dn_dst = static_cast<uint8_t*>(l.down_slots.get());
  for (const Copy& c : copies) {
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(gu_dst + c.slot * gu, l.src.gate_up->host_data() + c.expert * gu, gu,
                             cudaMemcpyHostToDevice, cs),
             "gate_up copy"));
    RETURN_IF_ERROR(
        Cuda(cudaMemcpyAsync(dn_dst + c.slot * dn, l.src.down->host_data() + c.expert * dn, dn,
                             cudaMemcpyHostToDevice, cs),
             "down copy"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GpuExpertSlots> GpuExpertCache::EnqueueRound(int round, cudaStream_t compute) {
  if (cur_ < 0 || round < 0 || round >= static_cast<int>(rounds_.size())) {
    return absl::InternalError("GPU expert cache: EnqueueRound without a plan");
  }
  Layer& l = layers_[cur_];
  cudaStream_t cs = copy_stream_->get();
  const Round& r = rounds_[round];
  if (!r.copies.empty()) {
    // The slots of the previous round are overwritten only once its products are done.
    if (round > 0) {
      RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(cs, round_done_.get(), 0), "wait round"));
    }
    RETURN_IF_ERROR(IssueCopies(l, r.copies));
  }
  if (!r.copies.empty() || (round == 0 && l.pending_prefetch)) {
    CudaEvent* start = NextEvent();
    CudaEvent* copied = NextEvent();
    RETURN_IF_ERROR(Cuda(cudaEventRecord(copied->get(), cs), "record copies"));
    RETURN_IF_ERROR(Cuda(cudaEventRecord(start->get(), compute), "record wait"));
    RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(compute, copied->get(), 0), "wait copies"));
    waits_.push_back({cur_, start, copied});
    l.pending_prefetch = false;
  }
  const size_t map_bytes = sizeof(int32_t) * n_expert_;
  int32_t* dev_map = map_dev_.as<int32_t>() + static_cast<size_t>(round) * n_expert_;
  RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(dev_map, map_host_.get() + round * map_bytes, map_bytes,
                                       cudaMemcpyHostToDevice, compute),
                       "slot map upload"));
  GpuExpertSlots s;
  s.gate_up = l.gate_up_slots.get();
  s.down = l.down_slots.get();
  s.expert_slot = dev_map;
  return s;
}

absl::Status GpuExpertCache::EndRound(int round, cudaStream_t compute) {
  if (round + 1 < static_cast<int>(rounds_.size())) {
    RETURN_IF_ERROR(Cuda(cudaEventRecord(round_done_.get(), compute), "record round"));
  } else {
    cur_ = -1;
  }
  return absl::OkStatus();
}

absl::Status GpuExpertCache::Prefetch(int li, std::span<const int32_t> experts) {
  if (!options_.prefetch || li < 0 || li >= n_layers()) return absl::OkStatus();
  Layer& l = layers_[li];
  std::vector<bool> pinned(slots_, false);
  std::vector<Copy> copies;
  for (int32_t e : experts) {
    if (e < 0 || e >= n_expert_) continue;
    if (l.slot_of[e] >= 0) {  // resident: keep it through this prediction
      pinned[l.slot_of[e]] = true;
      continue;
    }
    const int s = PickVictim(l, pinned, /*for_prefetch=*/true);
    if (s < 0) break;
    Assign(l, s, e, /*prefetched=*/true);
    pinned[s] = true;
    copies.push_back({e, s});
    ++l.stats.prefetched;
  }
  if (copies.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(IssueCopies(l, copies));
  // Compute waits for these when the layer runs: EnqueueRound(0) records its event on the copy
  // stream, behind them.
  l.pending_prefetch = true;
  return absl::OkStatus();
}

void GpuExpertCache::FinishStep() {
  for (const Wait& w : waits_) {
    const float ms = w.copied->MillisSince(*w.start);
    if (ms > 0) layers_[w.li].stats.stall_s += ms * 1e-3;
  }
  waits_.clear();
  events_used_ = 0;
}

void GpuExpertCache::Clear() {
  cudaStreamSynchronize(copy_stream_->get());
  for (Layer& l : layers_) {
    for (Slot& s : l.slots) s = Slot();
    std::fill(l.slot_of.begin(), l.slot_of.end(), -1);
    l.pending_prefetch = false;
  }
  cur_ = -1;
  waits_.clear();
  events_used_ = 0;
}

ExpertCacheStats GpuExpertCache::Stats() const {
  ExpertCacheStats s;
  s.budget_bytes = options_.budget_bytes;
  s.slots_per_layer = slots_;
  s.capacity_bytes = expert_bytes_total_ * slots_;
  s.resident_bytes = s.capacity_bytes;  // every slot is allocated up front
  s.prefetch = options_.prefetch;
  for (const Layer& l : layers_) s.layers.push_back(l.stats);
  return s;
}

int64_t GpuExpertCache::cpu_experts() const {
  int64_t n = 0;
  for (const Layer& l : layers_) n += l.cpu_experts;
  return n;
}

double GpuExpertCache::MeasureCopyUs() {
  Layer& l = layers_[0];
  const Copy c{0, 0};
  std::vector<float> ms;
  CudaEvent a, b;
  for (int r = 0; r < 4; ++r) {
    cudaEventRecord(a.get(), copy_stream_->get());
    if (!IssueCopies(l, std::span<const Copy>(&c, 1)).ok()) return 0;
    cudaEventRecord(b.get(), copy_stream_->get());
    cudaEventSynchronize(b.get());
    if (r > 0) ms.push_back(b.MillisSince(a));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;
}

void GpuExpertCache::ResetStats() {
  for (Layer& l : layers_) {
    l.cpu_experts = 0;
    const int layer = l.stats.layer;
    l.stats = LayerCacheStats();
    l.stats.layer = layer;
  }
}

}  // namespace tritmoe::gpu
