// A stand-in Engine for scheduler tests: no model, a synthetic tokenizer, and a deterministic
// "next token" rule, so the expected output of every request is known without running the
// scheduler. It checks every step against the Engine contract (engine.h) the way the real
// driver does -- unknown/duplicate ids, a step over max_tokens_per_step, more live sequences
// than max_sequences (releases count until the end of their step), a sequence out of room -- and
// records what each step held, so tests can assert how requests were batched.
//
// With n_ranks > 1 it places sequences as engine.h says (fewest live sequences, ties to the lowest
// rank; a release counts until the end of its step) and can hold a rank to a KV budget: a start
// that overflows its rank is a violation, as it would fail that rank. Every step reports per-rank
// phase times (a known function of the rank's tokens, summed in rank_totals()), and the fake
// router sends every token of a step to fixed experts per MoE layer (set_routing), so the
// expected load imbalance of each layer is known in closed form; a fake expert cache
// (set_expert_cache) counts a known function of every item, for CollectExpertCacheStats.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "comm/expert_placement.h"
#include "comm/routing_stats.h"
#include "runtime/engine/engine.h"
#include "runtime/text/synthetic_vocab.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe::testing {

// Token ids 3 + 'a' .. 3 + 'z' decode to the letters a..z in the synthetic vocabulary.
inline int32_t LetterToken(char c) { return 3 + static_cast<unsigned char>(c); }

// The fake model: the next token after `history` (prompt + generated so far). A letter chosen by
// a hash of the whole history, or EOS (id 1) once `eos_after` tokens were generated.
inline int32_t FakeNextToken(const std::vector<int32_t>& history, int generated, int eos_after) {
  if (eos_after > 0 && generated >= eos_after) return 1;
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : history) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  return LetterToken(static_cast<char>('a' + (h >> 33) % 26));
}

// What `n` generated tokens of a request look like when run alone.
inline std::vector<int32_t> FakeReference(std::vector<int32_t> prompt, int n, int eos_after = 0,
                                          bool ignore_eos = false) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    int32_t t = FakeNextToken(prompt, i, ignore_eos ? 0 : eos_after);
    out.push_back(t);
    prompt.push_back(t);
    if (t == 1) break;
  }
  return out;
}

struct FakeStepRecord {
  int tokens = 0;
  int items = 0;
  int prefill_items = 0;  // items with more than one token or sample == false
  int decode_items = 0;
  int starts = 0;
  int releases = 0;
  int live_after = 0;
  std::vector<uint64_t> item_ids;
  std::vector<int> item_tokens;   // per item: its number of new tokens
  std::vector<int64_t> kv_after;  // [rank]: KV tokens reserved after the step's starts
};

// The phase times the fake engine reports for a rank with `tokens` new tokens in a step.
inline StepPhaseTimes FakeRankTimes(int64_t tokens) {
  StepPhaseTimes t;
  t.attention_s = 1e-3 * static_cast<double>(tokens);
  t.moe_compute_s = 2e-3 * static_cast<double>(tokens) + 1e-4;
  t.dispatch_s = 5e-4;
  t.combine_s = 2.5e-4;
  t.other_s = 1e-5;
  t.tokens = tokens;
  return t;
}

class FakeEngine final : public Engine {
 public:
  FakeEngine(int max_sequences, int max_tokens_per_step, int64_t max_context, int n_vocab = 512,
             int n_ranks = 1)
      : max_sequences_(max_sequences),
        max_tokens_per_step_(max_tokens_per_step),
        max_context_(max_context),
        n_ranks_(n_ranks),
        tokenizer_(*Tokenizer::Create(*MakeSyntheticVocab(n_vocab, 7))),
        ranks_(n_ranks),
        rank_totals_(n_ranks) {
    config_.n_vocab = n_vocab;
  }

  int rank() const override { return 0; }
  int num_ranks() const override { return n_ranks_; }
  const ModelConfig& config() const override { return config_; }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  int64_t max_context() const override { return max_context_; }
  int64_t weight_bytes_loaded() const override { return 0; }
  const std::vector<EngineRankInfo>& ranks() const override { return ranks_; }
  int threads() const override { return 1; }

  absl::StatusOr<EngineStepResult> Step(const EngineStep& step) override {
    {
      std::unique_lock<std::mutex> gate(gate_mu_);
      ++steps_entered_;
      gate_cv_.notify_all();
      gate_cv_.wait(gate, [&] { return !held_; });
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (fail_at_step_ >= 0 && static_cast<int>(log_.size()) == fail_at_step_) {
      return absl::InternalError("injected engine failure");
    }
    if (absl::Status s = Check(step); !s.ok()) {
      violations_.push_back(std::string(s.message()));
      return s;
    }
    if (step_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_delay_ms_));
    step_thread_ = std::this_thread::get_id();
    FakeStepRecord rec;
    for (const SequenceStart& s : step.start) {
      live_[s.id] = Seq{s.capacity, {}, 0, s.sampling.ignore_eos, Place()};
      ++rec.starts;
    }
    rec.kv_after.assign(n_ranks_, 0);
    for (const auto& [id, seq] : live_) rec.kv_after[seq.rank] += seq.capacity;
    for (int r = 0; r < n_ranks_; ++r) {
      if (kv_per_rank_ > 0 && rec.kv_after[r] > kv_per_rank_) {
        violations_.push_back(absl::StrCat("rank ", r, " holds ", rec.kv_after[r],
                                           " KV tokens, over its budget of ", kv_per_rank_));
      }
    }
    EngineStepResult result;
    std::vector<int64_t> rank_tokens(n_ranks_, 0);
    for (const EngineItem& it : step.items) {
      Seq& seq = live_[it.id];
      rank_tokens[seq.rank] += static_cast<int64_t>(it.tokens.size());
      for (size_t i = 0; i < it.tokens.size(); ++i) Route();
      CountCache(static_cast<int64_t>(it.tokens.size()));
      // Tokens fed after the prompt are the sequence's own samples coming back.
      seq.history.insert(seq.history.end(), it.tokens.begin(), it.tokens.end());
      rec.tokens += static_cast<int>(it.tokens.size());
      ++rec.items;
      rec.item_ids.push_back(it.id);
      rec.item_tokens.push_back(static_cast<int>(it.tokens.size()));
      const bool decode = seq.generated > 0 && it.tokens.size() == 1 && it.sample;
      decode ? ++rec.decode_items : ++rec.prefill_items;
      if (it.sample) {
        const int32_t t =
            FakeNextToken(seq.history, seq.generated, seq.ignore_eos ? 0 : eos_after_);
        ++seq.generated;
        result.tokens.push_back(t);
      } else {
        result.tokens.push_back(-1);
      }
      result.logits.emplace_back();
    }
    for (uint64_t id : step.release) {
      live_.erase(id);
      ++rec.releases;
    }
    rec.live_after = static_cast<int>(live_.size());
    log_.push_back(rec);
    for (int r = 0; r < n_ranks_; ++r) {
      result.rank_times.push_back(FakeRankTimes(rank_tokens[r]));
      rank_totals_[r] += result.rank_times.back();
    }
    return result;
  }

  absl::StatusOr<RoutingStats> CollectRoutingStats() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (routes_.empty()) return absl::FailedPreconditionError("no MoE layers");
    // A collective in the real engine: it must come from the thread that runs the steps.
    if (std::this_thread::get_id() != step_thread_) {
      violations_.push_back("CollectRoutingStats off the step thread");
    }
    ++routing_collections_;
    return routing_;
  }
  absl::StatusOr<std::optional<ExpertCacheStats>> CollectExpertCacheStats() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::this_thread::get_id() != step_thread_) {
      violations_.push_back("CollectExpertCacheStats off the step thread");
    }
    ++cache_collections_;
    return cache_;
  }
  std::vector<ExpertPlacement> expert_placements() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ExpertPlacement> out;
    for (size_t l = 0; l < routes_.size(); ++l) {
      out.push_back(*ExpertPlacement::Contiguous(routing_.num_experts(), n_ranks_));
    }
    return out;
  }
  absl::Status Shutdown() override { return absl::OkStatus(); }
  absl::Status RunWorker() override { return absl::FailedPreconditionError("driver only"); }

  // Test controls and observations.
  void set_eos_after(int n) { eos_after_ = n; }
  void set_fail_at_step(int step) { fail_at_step_ = step; }
  void set_step_delay_ms(int ms) { step_delay_ms_ = ms; }
  // Hold: Step blocks on entry until Resume, so a test can queue requests behind a step in
  // flight whatever the machine's speed. WaitForStepEntered(n): until n steps have begun.
  void Hold() {
    std::lock_guard<std::mutex> gate(gate_mu_);
    held_ = true;
  }
  void Resume() {
    {
      std::lock_guard<std::mutex> gate(gate_mu_);
      held_ = false;
    }
    gate_cv_.notify_all();
  }
  void WaitForStepEntered(int n) {
    std::unique_lock<std::mutex> gate(gate_mu_);
    gate_cv_.wait(gate, [&] { return steps_entered_ >= n; });
  }
  // Holds every rank to `tokens` of KV reservations (0: no limit).
  void set_kv_tokens_per_rank(int64_t tokens) { kv_per_rank_ = tokens; }
  // routes[layer]: the experts (of n_experts, contiguous over the ranks) every token goes to.
  void set_routing(int n_experts, std::vector<std::vector<int>> routes) {
    routing_ = RoutingStats(static_cast<int>(routes.size()), n_experts);
    routes_ = std::move(routes);
  }
  // A fake expert cache of n_layers MoE layers and `slots` slots: each item of a step asks layer
  // l for l + 1 experts, the first a miss of 1000 bytes and 1 ms of stall, the rest hits.
  void set_expert_cache(int n_layers, int64_t slots) {
    std::lock_guard<std::mutex> lock(mu_);
    cache_.emplace();
    cache_->slots_per_layer = slots;
    cache_->layers.resize(n_layers);
    for (int l = 0; l < n_layers; ++l) cache_->layers[l].layer = l;
  }
  std::optional<ExpertCacheStats> expert_cache() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cache_;
  }
  int cache_collections() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cache_collections_;
  }
  int routing_collections() const {
    std::lock_guard<std::mutex> lock(mu_);
    return routing_collections_;
  }
  std::vector<StepPhaseTimes> rank_totals() const {
    std::lock_guard<std::mutex> lock(mu_);
    return rank_totals_;
  }
  std::vector<FakeStepRecord> log() const {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }
  int live() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(live_.size());
  }

 private:
  struct Seq {
    int64_t capacity = 0;
    std::vector<int32_t> history;
    int generated = 0;
    bool ignore_eos = false;
    int rank = 0;
  };

  // engine.h's placement, computed independently of the scheduler's KvLedger.
  int Place() const {
    std::vector<int> load(n_ranks_, 0);
    for (const auto& [id, seq] : live_) ++load[seq.rank];
    int best = 0;
    for (int r = 1; r < n_ranks_; ++r) {
      if (load[r] < load[best]) best = r;
    }
    return best;
  }
  void CountCache(int64_t tokens) {
    if (!cache_.has_value()) return;
    for (LayerCacheStats& l : cache_->layers) {
      l.tokens += tokens;
      l.misses += 1;
      l.hits += l.layer;
      l.bytes_read += 1000;
      l.stall_s += 0.001;
    }
  }
  void Route() {
    for (size_t l = 0; l < routes_.size(); ++l) {
      for (int e : routes_[l]) routing_.Add(static_cast<int>(l), e, 1);
    }
  }

  absl::Status Check(const EngineStep& step) const {
    std::set<uint64_t> started;
    for (const SequenceStart& s : step.start) {
      if (live_.count(s.id) || !started.insert(s.id).second) {
        return absl::InvalidArgumentError(absl::StrCat("start of live id ", s.id));
      }
      if (s.capacity < 1 || s.capacity > max_context_) {
        return absl::InvalidArgumentError(absl::StrCat("id ", s.id, ": capacity ", s.capacity));
      }
      if (absl::Status v = s.sampling.Validate(); !v.ok()) return v;
    }
    if (static_cast<int>(live_.size() + started.size()) > max_sequences_) {
      return absl::InvalidArgumentError("more live sequences than max_sequences");
    }
    std::set<uint64_t> seen;
    int total = 0;
    for (const EngineItem& it : step.items) {
      if (!seen.insert(it.id).second) return absl::InvalidArgumentError("item twice");
      int64_t capacity, size;
      if (auto l = live_.find(it.id); l != live_.end()) {
        capacity = l->second.capacity;
        size = static_cast<int64_t>(l->second.history.size());
      } else if (started.count(it.id)) {
        capacity = std::find_if(step.start.begin(), step.start.end(), [&](const SequenceStart& s) {
                     return s.id == it.id;
                   })->capacity;
        size = 0;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown id ", it.id));
      }
      if (it.tokens.empty()) return absl::InvalidArgumentError("no tokens");
      for (int32_t t : it.tokens) {
        if (t < 0 || t >= config_.n_vocab) return absl::InvalidArgumentError("bad token");
      }
      if (size + static_cast<int64_t>(it.tokens.size()) > capacity) {
        return absl::InvalidArgumentError(absl::StrCat("id ", it.id, " out of room"));
      }
      total += static_cast<int>(it.tokens.size());
    }
    if (total > max_tokens_per_step_) {
      return absl::InvalidArgumentError(absl::StrCat("step of ", total, " tokens"));
    }
    std::set<uint64_t> released;
    for (uint64_t id : step.release) {
      if ((!live_.count(id) && !started.count(id)) || !released.insert(id).second) {
        return absl::InvalidArgumentError(absl::StrCat("bad release of ", id));
      }
      if (seen.count(id)) return absl::InvalidArgumentError("released id also an item");
    }
    return absl::OkStatus();
  }

  const int max_sequences_;
  const int max_tokens_per_step_;
  const int64_t max_context_;
  const int n_ranks_;
  ModelConfig config_;
  Tokenizer tokenizer_;
  std::vector<EngineRankInfo> ranks_;
  mutable std::mutex mu_;
  std::map<uint64_t, Seq> live_;
  std::vector<FakeStepRecord> log_;
  std::vector<std::string> violations_;
  int eos_after_ = 0;
  int fail_at_step_ = -1;
  int step_delay_ms_ = 0;
  int64_t kv_per_rank_ = 0;
  std::thread::id step_thread_;
  std::vector<std::vector<int>> routes_;
  RoutingStats routing_;
  int routing_collections_ = 0;
  std::optional<ExpertCacheStats> cache_;
  int cache_collections_ = 0;
  std::vector<StepPhaseTimes> rank_totals_;
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool held_ = false;
  int steps_entered_ = 0;
};

}  // namespace tritmoe::testing
