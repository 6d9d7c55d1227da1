// A stand-in Engine for scheduler tests: no model, a synthetic tokenizer, and a deterministic
// "next token" rule, so the expected output of every request is known without running the
// scheduler. It checks every step against the Engine contract (engine.h) the way the real
// driver does -- unknown/duplicate ids, a step over max_tokens_per_step, more live sequences
// than max_sequences (releases count until the end of their step), a sequence out of room -- and
// records what each step held, so tests can assert how requests were batched.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
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
};

class FakeEngine final : public Engine {
 public:
  FakeEngine(int max_sequences, int max_tokens_per_step, int64_t max_context, int n_vocab = 512)
      : max_sequences_(max_sequences),
        max_tokens_per_step_(max_tokens_per_step),
        max_context_(max_context),
        tokenizer_(*Tokenizer::Create(*MakeSyntheticVocab(n_vocab, 7))) {
    config_.n_vocab = n_vocab;
  }

  int rank() const override { return 0; }
  int num_ranks() const override { return 1; }
  const ModelConfig& config() const override { return config_; }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  int64_t max_context() const override { return max_context_; }
  int64_t weight_bytes_loaded() const override { return 0; }
  const std::vector<EngineRankInfo>& ranks() const override { return ranks_; }
  int threads() const override { return 1; }

  absl::StatusOr<EngineStepResult> Step(const EngineStep& step) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (fail_at_step_ >= 0 && static_cast<int>(log_.size()) == fail_at_step_) {
      return absl::InternalError("injected engine failure");
    }
    if (absl::Status s = Check(step); !s.ok()) {
      violations_.push_back(std::string(s.message()));
      return s;
    }
    if (step_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_delay_ms_));
    FakeStepRecord rec;
    for (const SequenceStart& s : step.start) {
      live_[s.id] = Seq{s.capacity, {}, 0, s.sampling.ignore_eos};
      ++rec.starts;
    }
    EngineStepResult result;
    for (const EngineItem& it : step.items) {
      Seq& seq = live_[it.id];
      // Tokens fed after the prompt are the sequence's own samples coming back.
      seq.history.insert(seq.history.end(), it.tokens.begin(), it.tokens.end());
      rec.tokens += static_cast<int>(it.tokens.size());
      ++rec.items;
      rec.item_ids.push_back(it.id);
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
    return result;
  }
  absl::Status Shutdown() override { return absl::OkStatus(); }
  absl::Status RunWorker() override { return absl::FailedPreconditionError("driver only"); }

  // Test controls and observations.
  void set_eos_after(int n) { eos_after_ = n; }
  void set_fail_at_step(int step) { fail_at_step_ = step; }
  void set_step_delay_ms(int ms) { step_delay_ms_ = ms; }
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
  };

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
  ModelConfig config_;
  Tokenizer tokenizer_;
  std::vector<EngineRankInfo> ranks_ = {EngineRankInfo{}};
  mutable std::mutex mu_;
  std::map<uint64_t, Seq> live_;
  std::vector<FakeStepRecord> log_;
  std::vector<std::string> violations_;
  int eos_after_ = 0;
  int fail_at_step_ = -1;
  int step_delay_ms_ = 0;
};

}  // namespace tritmoe::testing
