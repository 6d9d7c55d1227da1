#include "runtime/serve/request_stream.h"

#include <chrono>

namespace tritmoe {

const char* OpenAiFinishReason(ServeFinish finish) {
  switch (finish) {
    case ServeFinish::kEos:
    case ServeFinish::kStopToken:
    case ServeFinish::kStopString:
      return "stop";
    case ServeFinish::kLength:
      return "length";
    case ServeFinish::kAbort:
      return "abort";
  }
  return "abort";
}

void RequestStream::Push(StreamEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = !std::holds_alternative<StreamChunk>(event);
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

bool RequestStream::Next(std::vector<StreamEvent>* out, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (events_.empty()) {
    cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return !events_.empty(); });
  }
  if (events_.empty()) return false;
  for (StreamEvent& e : events_) out->push_back(std::move(e));
  events_.clear();
  return true;
}

void RequestStream::Cancel() {
  if (!cancelled_.exchange(true) && wake_) wake_();
}

void RequestStream::Abort() {
  if (!aborted_.exchange(true) && wake_) wake_();
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

}  // namespace tritmoe
