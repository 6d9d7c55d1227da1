// Per-sequence token sampling.
//
// SamplingParams defaults are DeepSeek's recommendations for R1 (temperature 0.6, top_p 0.95)
// plus min_p 0.05, which Unsloth recommends for the 1.58-bit quants to suppress the rare garbage
// tokens the heavy quantization lets through. temperature 0 means greedy decoding.
//
// Sampler::Sample applies, in order: the min_tokens/ignore_eos masks, top-k (on logits), softmax
// with temperature, top-p (smallest set of most likely tokens whose mass reaches top_p), min-p
// (drop tokens below min_p times the top probability), then draws from what is left with the
// sequence's own std::mt19937_64 seeded from params.seed: the same seed and the same logits give
// the same tokens, on any machine (the draw does not go through std:: distributions, whose
// algorithms differ between standard libraries). Ties are broken towards the lower token id.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tritmoe {

struct SamplingParams {
  float temperature = 0.6f;  // >= 0; 0 = greedy (argmax)
  int32_t top_k = 0;         // >= 0; 0 = off
  float top_p = 0.95f;       // (0, 1]; 1 = off
  float min_p = 0.05f;       // [0, 1]; 0 = off
  // The server should draw a fresh seed for requests that do not give one.
  uint64_t seed = 0;
  int32_t max_tokens = 32768;     // >= 1; R1's recommended maximum generation length
  int32_t min_tokens = 0;         // 0..max_tokens; EOS and stop tokens are masked until reached
  std::vector<std::string> stop;  // stop strings (non-empty), matched on output text
  std::vector<int32_t> stop_token_ids;  // extra tokens that end the sequence (besides EOS)
  bool ignore_eos = false;              // keep generating through EOS (benchmarks)

  // OK, or InvalidArgument naming the offending field and its value.
  absl::Status Validate() const;
  // Greedy decoding with everything else at its default.
  static SamplingParams Greedy();
};

struct TokenProb {
  int32_t id;
  float prob;
  bool operator==(const TokenProb&) const = default;
};

class Sampler {
 public:
  // Validates params (including stop_token_ids and eos_id against n_vocab).
  static absl::StatusOr<Sampler> Create(const SamplingParams& params, int32_t n_vocab,
                                        int32_t eos_id);

  // Chooses the next token. num_generated: tokens this sequence has produced so far (for
  // min_tokens). Fails if logits.size() != n_vocab, a logit is NaN, or every token is masked.
  absl::StatusOr<int32_t> Sample(absl::Span<const float> logits, int32_t num_generated);

  // The distribution the draw uses (after all filters, renormalized), most likely first. With
  // temperature 0 it is the single argmax token with probability 1. Deterministic; no RNG.
  absl::StatusOr<std::vector<TokenProb>> Distribution(absl::Span<const float> logits,
                                                      int32_t num_generated) const;

  const SamplingParams& params() const { return params_; }

 private:
  Sampler(const SamplingParams& params, int32_t n_vocab, int32_t eos_id)
      : params_(params), n_vocab_(n_vocab), eos_id_(eos_id), rng_(params.seed) {}

  // Whether the token may not be sampled at this step.
  bool Masked(int32_t id, int32_t num_generated) const;

  SamplingParams params_;
  int32_t n_vocab_;
  int32_t eos_id_;
  std::mt19937_64 rng_;
};

}  // namespace tritmoe
