#include "runtime/text/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace tritmoe {
namespace {

absl::Status FieldError(const char* field, const std::string& value, const char* expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("SamplingParams.", field, " = ", value, ": must be ", expected));
}

// Sorted most likely first, lower id first among equals.
bool Before(const TokenProb& a, const TokenProb& b) {
  return a.prob != b.prob ? a.prob > b.prob : a.id < b.id;
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return FieldError("temperature", absl::StrCat(temperature), ">= 0 and finite");
  }
  if (top_k < 0) return FieldError("top_k", absl::StrCat(top_k), ">= 0 (0 disables it)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return FieldError("top_p", absl::StrCat(top_p), "in (0, 1]");
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return FieldError("min_p", absl::StrCat(min_p), "in [0, 1]");
  }
  if (max_tokens < 1) return FieldError("max_tokens", absl::StrCat(max_tokens), ">= 1");
  if (min_tokens < 0 || min_tokens > max_tokens) {
    return FieldError("min_tokens", absl::StrCat(min_tokens),
                      absl::StrCat("in [0, max_tokens = ", max_tokens, "]").c_str());
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SamplingParams.stop[", i, "] is empty: stop strings must be non-empty"));
    }
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("SamplingParams.stop_token_ids[", i,
                                                     "] = ", stop_token_ids[i], ": must be >= 0"));
    }
  }
  return absl::OkStatus();
}

SamplingParams SamplingParams::Greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& params, int32_t n_vocab,
                                        int32_t eos_id) {
  RETURN_IF_ERROR(params.Validate());
  if (n_vocab < 1) return absl::InvalidArgumentError(absl::StrCat("n_vocab = ", n_vocab));
  if (eos_id < -1 || eos_id >= n_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("eos_id = ", eos_id, " is outside [0, ", n_vocab, ")"));
  }
  for (size_t i = 0; i < params.stop_token_ids.size(); ++i) {
    if (params.stop_token_ids[i] >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("SamplingParams.stop_token_ids[", i,
                                                     "] = ", params.stop_token_ids[i],
                                                     ": must be < n_vocab = ", n_vocab));
    }
  }
  return Sampler(params, n_vocab, eos_id);
}

bool Sampler::Masked(int32_t id, int32_t num_generated) const {
  const bool ending = id == eos_id_ ||
                      std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), id) !=
                          params_.stop_token_ids.end();
  if (!ending) return false;
  if (id == eos_id_ && params_.ignore_eos) return true;
  return num_generated < params_.min_tokens;
}

absl::StatusOr<std::vector<TokenProb>> Sampler::Distribution(absl::Span<const float> logits,
                                                             int32_t num_generated) const {
  if (static_cast<int64_t>(logits.size()) != n_vocab_) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", logits.size(), " logits, expected n_vocab = ", n_vocab_));
  }
  // Only the few ending tokens can be masked; test them once instead of per logit.
  std::vector<int32_t> masked;
  if (eos_id_ >= 0 && Masked(eos_id_, num_generated)) masked.push_back(eos_id_);
  for (int32_t id : params_.stop_token_ids) {
    if (Masked(id, num_generated)) masked.push_back(id);
  }
  const auto is_masked = [&](int32_t id) {
    return !masked.empty() && std::find(masked.begin(), masked.end(), id) != masked.end();
  };

  // Candidates (id, logit) that are not masked and not -inf.
  std::vector<TokenProb> cand;
  cand.reserve(logits.size());
  for (int32_t i = 0; i < n_vocab_; ++i) {
    const float l = logits[i];
    if (std::isnan(l)) return absl::InvalidArgumentError(absl::StrCat("logit ", i, " is NaN"));
    if (l == -std::numeric_limits<float>::infinity() || is_masked(i)) continue;
    cand.push_back({i, l});
  }
  if (cand.empty()) return absl::FailedPreconditionError("every token is masked");

  if (params_.temperature == 0.0f) {
    const TokenProb best = *std::min_element(cand.begin(), cand.end(), Before);
    return std::vector<TokenProb>{{best.id, 1.0f}};
  }
  // top-k on logits (`prob` still holds the logit here).
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < cand.size()) {
    std::nth_element(cand.begin(), cand.begin() + params_.top_k, cand.end(), Before);
    cand.resize(params_.top_k);
  }
  // Softmax with temperature, in double.
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const TokenProb& c : cand) max_logit = std::max(max_logit, c.prob);
  std::vector<double> w(cand.size());
  double sum = 0.0;
  for (size_t i = 0; i < cand.size(); ++i) {
    w[i] = std::exp((static_cast<double>(cand[i].prob) - max_logit) / params_.temperature);
    sum += w[i];
  }
  double p_max = 0.0;
  for (size_t i = 0; i < cand.size(); ++i) {
    cand[i].prob = static_cast<float>(w[i] / sum);
    p_max = std::max(p_max, w[i] / sum);
  }
  // top-p and min-p each keep a prefix of the candidates sorted by probability, so applying
  // min-p first (a cheap filter) and sorting only its survivors gives the same set as the
  // documented order; top-p's cumulative mass is taken over the full distribution.
  if (params_.min_p > 0.0f) {
    const double threshold = params_.min_p * p_max;
    std::vector<TokenProb> kept;
    for (size_t i = 0; i < cand.size(); ++i) {
      if (w[i] / sum >= threshold) kept.push_back(cand[i]);
    }
    cand.swap(kept);
  }
  std::sort(cand.begin(), cand.end(), Before);
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    size_t n = 0;
    while (n < cand.size()) {
      cum += cand[n].prob;
      ++n;
      if (cum >= params_.top_p) break;
    }
    cand.resize(n);
  }
  double kept_sum = 0.0;
  for (const TokenProb& c : cand) kept_sum += c.prob;
  for (TokenProb& c : cand) c.prob = static_cast<float>(c.prob / kept_sum);
  return cand;
}

absl::StatusOr<int32_t> Sampler::Sample(absl::Span<const float> logits, int32_t num_generated) {
  ASSIGN_OR_RETURN(std::vector<TokenProb> dist, Distribution(logits, num_generated));
  if (params_.temperature == 0.0f) return dist[0].id;
  // Every non-greedy step consumes exactly one draw, so a sequence's RNG state depends only on
  // how many tokens it has sampled.
  // u uniform in [0, 1) from the top 53 bits: identical on every platform.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double total = 0.0;
  for (const TokenProb& t : dist) total += t.prob;
  const double target = u * total;
  double cum = 0.0;
  for (const TokenProb& t : dist) {
    cum += t.prob;
    if (target < cum) return t.id;
  }
  return dist.back().id;  // rounding left target at the very top
}

}  // namespace tritmoe
