#include "runtime/store/expert_cache.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace tritmoe {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t Align64(uint64_t n) { return (n + 63) & ~uint64_t{63}; }

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

}  // namespace

absl::Status ExpertCacheOptions::Validate() const {
  if (budget_bytes < 0) return absl::InvalidArgumentError("expert cache budget must be >= 0");
  if (!(lrfu_lambda > 0.0 && lrfu_lambda <= 1.0)) {
    return absl::InvalidArgumentError("expert cache: lrfu_lambda must be in (0, 1]");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ExpertCache>> ExpertCache::Create(
    ExpertStore* store, std::vector<ExpertLayerLayout> layers, std::vector<bool> local,
    const ExpertCacheOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (store == nullptr) return absl::InvalidArgumentError("expert cache needs a store");
  std::unique_ptr<ExpertCache> c(new ExpertCache());
  c->store_ = store;
  c->options_ = options;
  const int n_expert = layers.empty() ? static_cast<int>(local.size()) : layers[0].n_expert;
  if (local.empty()) local.assign(n_expert, true);
  c->local_ = std::move(local);
  const int n_local = static_cast<int>(std::count(c->local_.begin(), c->local_.end(), true));

  uint64_t all_layers_bytes = 0;  // one slot in every layer
  int prev = -1;
  c->layers_.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const ExpertLayerLayout& lay = layers[i];
    if (lay.layer <= prev) return absl::InvalidArgumentError("expert cache: layers not ascending");
    prev = lay.layer;
    if (lay.n_expert != static_cast<int>(c->local_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("expert cache: layer ", lay.layer, " has ",
                                                     lay.n_expert, " experts, the local set ",
                                                     c->local_.size()));
    }
    for (int m = 0; m < 3; ++m) {
      if (lay.bytes[m] == 0 || store->FindTensor(lay.tensor[m]) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("expert cache: layer ", lay.layer,
                                                       " matrix '", lay.tensor[m],
                                                       "' is empty or not in ", store->name()));
      }
    }
    Layer& l = c->layers_[i];
    l.layout = lay;
    l.offset = {0, Align64(lay.bytes[0]), Align64(lay.bytes[0]) + Align64(lay.bytes[1])};
    l.slot_bytes = l.offset[2] + lay.bytes[2];
    l.slot_of.assign(lay.n_expert, -1);
    l.stats.layer = lay.layer;
    all_layers_bytes += l.slot_bytes;
  }
  int slots = n_local;
  if (options.budget_bytes > 0 && all_layers_bytes > 0) {
    const uint64_t fit = static_cast<uint64_t>(options.budget_bytes) / all_layers_bytes;
    slots = static_cast<int>(std::clamp<uint64_t>(fit, 1, std::max(n_local, 1)));
    slots = std::min(slots, n_local);
  }
  c->slots_per_layer_ = slots;
  c->capacity_bytes_ = static_cast<int64_t>(slots * all_layers_bytes);
  for (Layer& l : c->layers_) l.slots.resize(slots);

  const int max_layer = layers.empty() ? -1 : layers.back().layer;
  c->index_of_layer_.assign(max_layer + 1, -1);
  for (size_t i = 0; i < layers.size(); ++i) c->index_of_layer_[layers[i].layer] = i;
  c->entered_at_.assign(layers.size(), 0);
  if (options.prefetch) c->prefetcher_ = std::thread([p = c.get()] { p->PrefetchLoop(); });
  return c;
}

ExpertCache::~ExpertCache() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (prefetcher_.joinable()) prefetcher_.join();
}

absl::StatusOr<int> ExpertCache::LayerIndex(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(index_of_layer_.size()) ||
      index_of_layer_[layer] < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert cache: layer ", layer, " is not one of its MoE layers"));
  }
  return index_of_layer_[layer];
}

int ExpertCache::PickVictim(Layer& l, bool for_prefetch) const {
  int best = -1;
  double best_score = 0.0;
  for (int s = 0; s < static_cast<int>(l.slots.size()); ++s) {
    const Slot& slot = l.slots[s];
    if (slot.state == SlotState::kEmpty) return s;
    if (slot.state != SlotState::kReady || slot.pins > 0) continue;
    if (for_prefetch && slot.prefetched_unused) continue;
    const double score = slot.score.At(l.clock, options_.lrfu_lambda);
    if (best < 0 || score < best_score) best = s, best_score = score;
  }
  return best;
}

void ExpertCache::Evict(Layer& l, int s) {
  Slot& slot = l.slots[s];
  if (slot.expert >= 0) {
    l.slot_of[slot.expert] = -1;
    ++l.stats.evictions;
  }
  slot.expert = -1;
  slot.state = SlotState::kEmpty;
  slot.prefetched_unused = false;
  slot.score = {};
  if (slot.mem == nullptr) {
    slot.mem.reset(static_cast<uint8_t*>(::operator new[](l.slot_bytes, std::align_val_t(64))));
    resident_bytes_ += static_cast<int64_t>(l.slot_bytes);
  }
}

ExpertBytes ExpertCache::BytesOf(const Layer& l, const Slot& slot) const {
  const uint8_t* base = slot.mem.get();
  return {base + l.offset[0], base + l.offset[1], base + l.offset[2]};
}

absl::Status ExpertCache::Load(Layer& l, std::span<const int> slots) {
  std::vector<ReadRequest> reqs;
  reqs.reserve(3 * slots.size());
  for (int s : slots) {
    const Slot& slot = l.slots[s];
    for (int m = 0; m < 3; ++m) {
      const uint64_t n = l.layout.bytes[m];
      reqs.push_back({l.layout.tensor[m], static_cast<uint64_t>(slot.expert) * n, n,
                      slot.mem.get() + l.offset[m]});
    }
  }
  return store_->Read(reqs);
}

absl::Status ExpertCache::ForEach(int layer, std::span<const int32_t> experts,
                                  absl::FunctionRef<void(size_t, const ExpertBytes&)> fn) {
  ASSIGN_OR_RETURN(const int li, LayerIndex(layer));
  for (int32_t e : experts) {
    if (e < 0 || e >= static_cast<int32_t>(local_.size()) || !local_[e]) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert cache: layer ", layer, " expert ", e, " is not local"));
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  Layer& l = layers_[li];
  entered_at_[li] = ++entries_;
  if (job_.has_value() && job_->layer_index == li) job_.reset();  // too late to help
  ++l.clock;

  std::vector<size_t> pending(experts.size());
  std::iota(pending.begin(), pending.end(), size_t{0});
  std::vector<char> counted(experts.size(), 0);
  std::vector<std::pair<size_t, int>> run;  // (index, slot) handed over this round
  std::vector<int> fetch;                   // slots this round reads
  while (!pending.empty()) {
    run.clear();
    fetch.clear();
    // Hits first, pinned, so that making room for the misses cannot evict them.
    for (size_t i : pending) {
      const int s = l.slot_of[experts[i]];
      if (s < 0) continue;
      Slot& slot = l.slots[s];
      if (!counted[i]) {
        counted[i] = 1;
        ++l.stats.hits;
        if (slot.prefetched_unused) ++l.stats.prefetch_used;
        slot.prefetched_unused = false;
      }
      if (slot.state == SlotState::kReady) {
        ++slot.pins;
        slot.score.Reference(l.clock, options_.lrfu_lambda);
        run.emplace_back(i, s);
      }
    }
    for (size_t i : pending) {
      const int32_t e = experts[i];
      if (l.slot_of[e] >= 0) continue;
      const int s = PickVictim(l, /*for_prefetch=*/false);
      if (s < 0) break;
      if (!counted[i]) {
        counted[i] = 1;
        ++l.stats.misses;
      }
      Evict(l, s);
      Slot& slot = l.slots[s];
      slot.expert = e;
      slot.state = SlotState::kLoading;
      slot.pins = 1;
      slot.score.Reference(l.clock, options_.lrfu_lambda);
      l.slot_of[e] = s;
      fetch.push_back(s);
      run.emplace_back(i, s);
    }
    if (run.empty()) {
      // What is left is being loaded by the prefetcher, or every slot is: wait for one.
      const bool loading = std::any_of(l.slots.begin(), l.slots.end(), [](const Slot& s) {
        return s.state == SlotState::kLoading;
      });
      if (!loading) {
        return absl::InternalError(
            absl::StrCat("expert cache: layer ", layer, " has no slot to load into"));
      }
      const Clock::time_point t0 = Clock::now();
      loaded_.wait(lock);
      l.stats.stall_s += Seconds(t0);
      continue;
    }
    if (!fetch.empty()) {
      lock.unlock();
      const Clock::time_point t0 = Clock::now();
      absl::Status st = Load(l, fetch);
      const double waited = Seconds(t0);
      lock.lock();
      l.stats.stall_s += waited;
      if (!st.ok()) {
        for (int s : fetch) {
          Slot& slot = l.slots[s];
          l.slot_of[slot.expert] = -1;
          slot.expert = -1;
          slot.state = SlotState::kEmpty;
          slot.pins = 0;
        }
        for (auto [i, s] : run) {
          if (l.slots[s].pins > 0) --l.slots[s].pins;
        }
        loaded_.notify_all();
        return absl::Status(st.code(),
                            absl::StrCat("expert cache, layer ", layer, ": ", st.message()));
      }
      for (int s : fetch) {
        l.slots[s].state = SlotState::kReady;
        l.stats.bytes_read += static_cast<int64_t>(l.layout.expert_bytes());
      }
      loaded_.notify_all();
    }
    lock.unlock();
    for (auto [i, s] : run) fn(i, BytesOf(l, l.slots[s]));
    lock.lock();
    for (auto [i, s] : run) --l.slots[s].pins;
    std::vector<char> done(experts.size(), 0);
    for (auto [i, s] : run) done[i] = 1;
    std::erase_if(pending, [&](size_t i) { return done[i] != 0; });
  }
  return absl::OkStatus();
}

void ExpertCache::Prefetch(int layer, std::span<const int32_t> experts) {
  if (!options_.prefetch) return;
  absl::StatusOr<int> li = LayerIndex(layer);
  if (!li.ok()) return;
  PrefetchJob job;
  job.layer_index = *li;
  for (int32_t e : experts) {
    if (static_cast<int>(job.experts.size()) >= slots_per_layer_) break;
    if (e >= 0 && e < static_cast<int32_t>(local_.size()) && local_[e]) job.experts.push_back(e);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job.entries = entries_;
    job_ = std::move(job);
  }
  wake_.notify_one();
}

void ExpertCache::PrefetchLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || job_.has_value(); });
    if (stop_) return;
    PrefetchJob job = std::move(*job_);
    job_.reset();
    Layer& l = layers_[job.layer_index];
    for (int32_t e : job.experts) {
      // Stop when the forward pass has reached the layer or a newer prediction is waiting.
      if (stop_ || job_.has_value() || entered_at_[job.layer_index] > job.entries) break;
      if (l.slot_of[e] >= 0) continue;
      const int s = PickVictim(l, /*for_prefetch=*/true);
      if (s < 0) break;
      Evict(l, s);
      Slot& slot = l.slots[s];
      slot.expert = e;
      slot.state = SlotState::kLoading;
      slot.prefetched_unused = true;
      l.slot_of[e] = s;
      lock.unlock();
      const int one[1] = {s};
      absl::Status st = Load(l, one);
      lock.lock();
      if (st.ok()) {
        slot.state = SlotState::kReady;
        ++l.stats.prefetched;
        l.stats.bytes_read += static_cast<int64_t>(l.layout.expert_bytes());
      } else {
        // Counted only: a demand read of this expert will report the error where it matters.
        l.slot_of[e] = -1;
        slot.expert = -1;
        slot.state = SlotState::kEmpty;
        slot.prefetched_unused = false;
        ++l.stats.prefetch_errors;
      }
      loaded_.notify_all();
    }
  }
}

void ExpertCache::CountTokens(int layer, int64_t n_tokens) {
  absl::StatusOr<int> li = LayerIndex(layer);
  if (!li.ok()) return;
  std::lock_guard<std::mutex> lock(mu_);
  layers_[*li].stats.tokens += n_tokens;
}

ExpertCacheStats ExpertCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ExpertCacheStats s;
  s.budget_bytes = options_.budget_bytes;
  s.slots_per_layer = slots_per_layer_;
  s.capacity_bytes = capacity_bytes_;
  s.resident_bytes = resident_bytes_;
  s.prefetch = options_.prefetch;
  for (const Layer& l : layers_) s.layers.push_back(l.stats);
  return s;
}

void ExpertCache::ResetStats() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Layer& l : layers_) {
    const int layer = l.stats.layer;
    l.stats = {};
    l.stats.layer = layer;
  }
}

}  // namespace tritmoe
