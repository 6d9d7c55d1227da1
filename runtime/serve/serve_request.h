// A validated generation request as the scheduler receives it: prompt token ids and the resolved
// sampling and stopping parameters. Front-ends build it with RequestBuilder (request_builder.h),
// which has already checked every field, so the scheduler never rejects one.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "runtime/text/sampler.h"

namespace tritmoe {

using ServeClock = std::chrono::steady_clock;

struct ServeRequest {
  std::string request_id;       // unique among live requests
  std::vector<int32_t> prompt;  // >= 1 token, all valid ids
  // Valid (SamplingParams::Validate); max_tokens already fits the context: prompt.size() +
  // max_tokens <= max_model_len.
  SamplingParams sampling;
  bool skip_special_tokens = true;   // control tokens are not rendered in the text
  bool separate_reasoning = false;   // split <think>...</think> into reasoning text
  bool starts_in_reasoning = false;  // the prompt opened a <think> block (chat template)
  // When set, the request fails with DeadlineExceeded once this passes (queued or running).
  std::optional<ServeClock::time_point> deadline;
  ServeClock::time_point arrival = ServeClock::now();
  absl::Time arrival_wall = absl::Now();
};

}  // namespace tritmoe
