// The engine's messages between ranks, as bytes (runtime/engine/wire.h):
//   * StepMessage: what the driver broadcasts for one step -- the EngineStep itself plus the rank
//     that owns each sequence it starts (the driver decides placement; workers just follow);
//   * RankResult: what each rank sends back to the driver -- its verdict, its step's phase times
//     and, for each item it owns, the sampled token and the requested logits rows.
// Every field of SamplingParams travels (workers build the samplers); adding a field to
// SamplingParams means adding it here (the round-trip test in tests/engine compares all fields).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"

namespace tritmoe {

struct StepMessage {
  EngineStep step;
  std::vector<int32_t> owners;  // [step.start.size()]: the rank owning each new sequence
};

std::vector<uint8_t> EncodeStepMessage(const StepMessage& message);
// DataLoss for a truncated or malformed message.
absl::StatusOr<StepMessage> DecodeStepMessage(std::span<const uint8_t> bytes);

struct ItemResult {
  int32_t item = 0;           // index into EngineStep::items
  int32_t token = -1;         // sampled token, -1 when the item did not ask for one
  std::vector<float> logits;  // requested rows, n_vocab floats each
};

struct RankResult {
  absl::Status status;  // a rank-local failure after the collective part (e.g. sampling)
  std::vector<ItemResult> items;
  StepPhaseTimes times;  // this rank's step, by phase (travels with the results: no extra message)
};

std::vector<uint8_t> EncodeRankResult(const RankResult& result);
absl::StatusOr<RankResult> DecodeRankResult(std::span<const uint8_t> bytes);

}  // namespace tritmoe
