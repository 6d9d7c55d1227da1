// The channel from the scheduler to the front-end that serves one request.
//
// The scheduler pushes, in order: zero or more Chunks (one per engine step that sampled a token
// for the request), then exactly one terminal event, a Completion or an error Status. The
// front-end (an HTTP or gRPC handler thread) takes them with Next. When the client goes away the
// front-end calls Cancel; the scheduler frees the sequence at its next step. Abort (the Abort RPC)
// makes the scheduler end the request with finish reason kAbort. All methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace tritmoe {

// Why a request ended (besides errors). kAbort: Abort RPC or server shutdown.
enum class ServeFinish { kEos, kStopToken, kStopString, kLength, kAbort };
// "stop" for kEos/kStopToken/kStopString, "length", "abort": OpenAI's finish_reason names.
const char* OpenAiFinishReason(ServeFinish finish);

// New output of one step.
struct StreamChunk {
  std::vector<int32_t> token_ids;  // the tokens sampled in this step (one today)
  std::string text;                // answer text completed by them (whole UTF-8 characters)
  std::string reasoning;           // reasoning text completed by them (separate_reasoning)
  int32_t prompt_tokens = 0;       // cumulative counts after this chunk
  int32_t completion_tokens = 0;
};

struct StreamCompletion {
  ServeFinish finish = ServeFinish::kLength;
  std::string matched_stop;    // the stop string, for kStopString
  int32_t matched_token = -1;  // the EOS or stop token, for kEos/kStopToken
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t reasoning_tokens = 0;  // of completion_tokens, those inside the reasoning block
  absl::Time arrival = absl::InfinitePast();
  double queue_seconds = 0;  // arrival to the first step that ran the request
  double ttft_seconds = 0;   // arrival to the first token (0 when none)
  double e2e_seconds = 0;    // arrival to completion
};

using StreamEvent = std::variant<StreamChunk, StreamCompletion, absl::Status>;

class RequestStream {
 public:
  // wake: called (from any thread) on Cancel and Abort, to wake the scheduler.
  RequestStream(std::string request_id, std::function<void()> wake)
      : request_id_(std::move(request_id)), wake_(std::move(wake)) {}

  const std::string& request_id() const { return request_id_; }

  // Scheduler side. Events after the terminal one are dropped.
  void Push(StreamEvent event);

  // Front-end side: waits up to `timeout` for events and moves all available ones to *out.
  // Returns false when none arrived in time.
  bool Next(std::vector<StreamEvent>* out, absl::Duration timeout);

  // The client went away: the scheduler frees the sequence and pushes Cancelled.
  void Cancel();
  // End the request early with finish reason kAbort (Abort RPC).
  void Abort();

  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  bool abort_requested() const { return aborted_.load(std::memory_order_relaxed); }
  // Whether the terminal event has been pushed.
  bool finished() const;

 private:
  const std::string request_id_;
  const std::function<void()> wake_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> aborted_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool finished_ = false;
};

}  // namespace tritmoe
