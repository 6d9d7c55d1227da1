// The client side of `tritmoe bench-serve`: drives an OpenAI-compatible server (ours or any other)
// with streamed requests of random token-id prompts, at a fixed concurrency and optionally a
// Poisson request rate, and measures what a user sees -- the conventions of `vllm bench serve`:
//
//   TTFT  request sent -> first SSE event carrying text
//   ITL   gaps between consecutive text events of a request
//   TPOT  (E2EL - TTFT) / (output tokens - 1), per request
//   E2EL  request sent -> [DONE]
//   output tokens: the usage the server reports (stream_options.include_usage), so the counts
//   are exact even when one event carries several tokens or a token carries no text.
//
// Requests ask for ignore_eos and exact max_tokens so every request generates its output length.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tritmoe {

struct LoadOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model;                         // "" = ask GET /v1/models
  std::string endpoint = "/v1/completions";  // or /v1/chat/completions
  int concurrency = 1;
  int num_prompts = 16;
  int input_len = 128;
  int output_len = 128;
  double range_ratio = 0;   // lengths uniform in [len * (1 - r), len * (1 + r)]
  double request_rate = 0;  // requests/s, Poisson arrivals; 0 = all at once (closed loop)
  uint64_t seed = 0;
  int vocab_size = 0;  // prompt token ids are drawn from [3, vocab_size); 0 = ask the server
  absl::Duration timeout = absl::Minutes(10);  // per request

  absl::Status Validate() const;
};

// Percentiles as numpy's default (linear interpolation), in the unit of the samples.
struct Distribution {
  double mean = 0, median = 0, p99 = 0;
  int64_t count = 0;
};
Distribution Summarize(std::vector<double> samples);

struct LoadResult {
  int concurrency = 0;
  int completed = 0;
  int failed = 0;
  std::string first_error;
  double duration_s = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double request_throughput = 0;  // completed requests / s
  double output_throughput = 0;   // output tokens / s
  double total_throughput = 0;    // (input + output) tokens / s
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
};

// The served model name and vocabulary size (GET /v1/models), for options left at "".
struct ServerModelInfo {
  std::string name;
  int vocab_size = 0;
  int64_t max_model_len = 0;
};
absl::StatusOr<ServerModelInfo> QueryModel(const std::string& host, int port);

// Runs one load level. Fails only on bad options or when the server cannot be reached at all;
// failed requests are counted in the result.
absl::StatusOr<LoadResult> RunLoad(const LoadOptions& options);

}  // namespace tritmoe
