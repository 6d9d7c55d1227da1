#include "runtime/serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/serve/field_error.h"

namespace tritmoe {
namespace {

double Seconds(ServeClock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

absl::Status SchedulerOptions::Validate() const {
  if (max_num_seqs < 1)
    return FieldError("max_num_seqs", absl::StrCat("must be >= 1, got ", max_num_seqs));
  if (max_num_batched_tokens < max_num_seqs) {
    return FieldError("max_num_batched_tokens",
                      absl::StrCat("must be >= max_num_seqs (", max_num_seqs,
                                   ": every running sequence decodes a token per step), got ",
                                   max_num_batched_tokens));
  }
  if (max_waiting < 0)
    return FieldError("max_waiting", absl::StrCat("must be >= 0, got ", max_waiting));
  if (kv_cache_tokens < 0) {
    return FieldError("kv_cache_tokens", absl::StrCat("must be >= 0, got ", kv_cache_tokens));
  }
  if (idle_wait <= absl::ZeroDuration()) return FieldError("idle_wait", "must be positive");
  return absl::OkStatus();
}

void Scheduler::WakeSignal::Notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = true;
  }
  cv_.notify_all();
}

void Scheduler::WakeSignal::WaitFor(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return pending_; });
  pending_ = false;
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Engine* engine,
                                                             const SchedulerOptions& options,
                                                             ServerMetrics* metrics) {
  if (engine == nullptr || !engine->is_driver()) {
    return absl::InvalidArgumentError("the scheduler needs the driver rank's engine");
  }
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<Scheduler>(new Scheduler(engine, options, metrics));
}

Scheduler::Scheduler(Engine* engine, const SchedulerOptions& options, ServerMetrics* metrics)
    : engine_(engine),
      options_(options),
      metrics_(metrics),
      kv_budget_(options.kv_cache_tokens > 0 ? options.kv_cache_tokens
                                             : options.max_num_seqs * engine->max_context()) {}

Scheduler::~Scheduler() = default;

absl::StatusOr<std::shared_ptr<RequestStream>> Scheduler::Submit(ServeRequest request) {
  const int64_t capacity =
      static_cast<int64_t>(request.prompt.size()) + request.sampling.max_tokens;
  if (capacity > kv_budget_) {
    return FieldError("max_tokens",
                      absl::StrCat("prompt (", request.prompt.size(), " tokens) + max_tokens (",
                                   request.sampling.max_tokens,
                                   ") exceeds the KV "
                                   "cache budget of ",
                                   kv_budget_, " tokens"));
  }
  std::shared_ptr<WakeSignal> wake = wake_;
  auto stream = std::make_shared<RequestStream>(request.request_id, [wake] { wake->Notify(); });
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fatal_.ok()) {
      return absl::UnavailableError(absl::StrCat("the engine failed: ", fatal_.message()));
    }
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(submitted_.size()) + n_waiting_.load() >= options_.max_waiting) {
      return absl::ResourceExhaustedError(absl::StrCat("the admission queue is full (",
                                                       options_.max_waiting, " requests waiting)"));
    }
    auto it = live_.find(request.request_id);
    if (it != live_.end() && !it->second.expired()) {
      return FieldError(absl::StatusCode::kAlreadyExists, "request_id",
                        absl::StrCat("'", request.request_id, "' is already in use"));
    }
    auto seq = std::make_unique<Sequence>();
    seq->request = std::move(request);
    seq->stream = stream;
    seq->capacity = capacity;
    live_[seq->request.request_id] = stream;
    submitted_.push_back(std::move(seq));
  }
  wake_->Notify();
  return stream;
}

int Scheduler::Abort(const std::vector<std::string>& request_ids) {
  int n = 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& id : request_ids) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    if (std::shared_ptr<RequestStream> s = it->second.lock(); s && !s->finished()) {
      s->Abort();
      ++n;
    }
  }
  return n;
}

void Scheduler::Stop(absl::Duration drain) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto deadline = ServeClock::now() + absl::ToChronoNanoseconds(drain);
    if (!stopping_ || deadline < stop_deadline_) stop_deadline_ = deadline;
    stopping_ = true;
  }
  wake_->Notify();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.running = n_running_.load();
  s.waiting = n_waiting_.load();
  s.kv_usage = static_cast<double>(kv_reserved_published_.load()) / kv_budget_;
  s.steps = steps_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.draining = stopping_;
  return s;
}

void Scheduler::Retire(Sequence* seq) {
  seq->done = true;
  if (seq->started) {
    to_release_.emplace_back(seq->id, seq->capacity);
    seq->started = false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(seq->request.request_id);
  if (it != live_.end() && it->second.lock() == seq->stream) live_.erase(it);
}

void Scheduler::FinishOk(Sequence* seq, ServeFinish finish) {
  if (seq->done) return;
  const auto now = ServeClock::now();
  if (finish == ServeFinish::kAbort && seq->output) {
    // Text held back (a possible stop string, a split character) is still the client's.
    OutputProcessor::Delta rest = seq->output->Finish();
    if (!rest.text.empty() || !rest.reasoning.empty()) {
      StreamChunk chunk;
      chunk.text = std::move(rest.text);
      chunk.reasoning = std::move(rest.reasoning);
      chunk.prompt_tokens = static_cast<int32_t>(seq->request.prompt.size());
      chunk.completion_tokens = seq->output->num_generated();
      seq->stream->Push(std::move(chunk));
    }
  }
  StreamCompletion c;
  c.finish = finish;
  c.prompt_tokens = static_cast<int32_t>(seq->request.prompt.size());
  if (seq->output) {
    c.completion_tokens = seq->output->num_generated();
    c.reasoning_tokens = seq->output->reasoning_tokens();
    if (finish == ServeFinish::kStopString) c.matched_stop = seq->output->matched_stop();
    if (finish == ServeFinish::kEos || finish == ServeFinish::kStopToken) {
      c.matched_token = seq->output->matched_token();
    }
  }
  const auto arrival = seq->request.arrival;
  c.arrival = seq->request.arrival_wall;
  c.queue_seconds = Seconds(
      (seq->first_scheduled == ServeClock::time_point{} ? now : seq->first_scheduled) - arrival);
  c.ttft_seconds =
      seq->first_token == ServeClock::time_point{} ? 0 : Seconds(seq->first_token - arrival);
  c.e2e_seconds = Seconds(now - arrival);
  if (metrics_ != nullptr) metrics_->OnFinished(c);
  seq->stream->Push(std::move(c));
  Retire(seq);
}

void Scheduler::FinishError(Sequence* seq, absl::Status status, const char* reason) {
  if (seq->done) return;
  if (metrics_ != nullptr) metrics_->OnFailed(reason);
  seq->stream->Push(std::move(status));
  Retire(seq);
}

void Scheduler::FailAll(const absl::Status& status) {
  std::deque<std::unique_ptr<Sequence>> submitted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    submitted.swap(submitted_);
  }
  auto fail = [&](Sequence* seq) { FinishError(seq, status, "internal"); };
  for (auto& seq : submitted) fail(seq.get());
  for (auto& seq : waiting_) fail(seq.get());
  for (auto& seq : running_) fail(seq.get());
  waiting_.clear();
  running_.clear();
}

bool Scheduler::Intake() {
  bool stopping;
  ServeClock::time_point stop_deadline;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!submitted_.empty()) {
      waiting_.push_back(std::move(submitted_.front()));
      submitted_.pop_front();
    }
    stopping = stopping_;
    stop_deadline = stop_deadline_;
  }
  const auto now = ServeClock::now();
  const bool abort_all = stopping && now >= stop_deadline;
  auto check = [&](Sequence* seq) {
    if (seq->stream->cancelled()) {
      FinishError(seq, absl::CancelledError("the client cancelled the request"), "cancelled");
    } else if (abort_all || seq->stream->abort_requested()) {
      FinishOk(seq, ServeFinish::kAbort);
    } else if (seq->request.deadline && now >= *seq->request.deadline) {
      FinishError(seq,
                  absl::DeadlineExceededError(absl::StrCat(
                      "the request's deadline passed while ",
                      seq->first_scheduled == ServeClock::time_point{} ? "queued" : "generating")),
                  "deadline");
    }
  };
  for (auto& seq : waiting_) check(seq.get());
  for (auto& seq : running_) check(seq.get());
  std::erase_if(waiting_, [](const auto& s) { return s->done; });
  std::erase_if(running_, [](const auto& s) { return s->done; });
  return !(stopping && waiting_.empty() && running_.empty());
}

void Scheduler::Emit(Sequence* seq, int32_t token, ServeClock::time_point now) {
  absl::StatusOr<OutputProcessor::Delta> delta = seq->output->Push(token);
  if (!delta.ok()) {
    FinishError(seq, absl::InternalError(absl::StrCat("sampled token: ", delta.status().message())),
                "internal");
    return;
  }
  if (seq->first_token == ServeClock::time_point{}) {
    seq->first_token = now;
    if (metrics_ != nullptr) metrics_->OnFirstToken(Seconds(now - seq->request.arrival));
  } else if (metrics_ != nullptr) {
    metrics_->OnInterToken(Seconds(now - seq->last_token_time));
  }
  seq->last_token_time = now;
  seq->last_token = token;
  StreamChunk chunk;
  chunk.token_ids.push_back(token);
  chunk.text = std::move(delta->text);
  chunk.reasoning = std::move(delta->reasoning);
  chunk.prompt_tokens = static_cast<int32_t>(seq->request.prompt.size());
  chunk.completion_tokens = seq->output->num_generated();
  seq->stream->Push(std::move(chunk));
  if (delta->finish) FinishOk(seq, *delta->finish);
}

void Scheduler::PublishStats() {
  n_running_.store(static_cast<int>(running_.size()));
  n_waiting_.store(static_cast<int>(waiting_.size()));
  kv_reserved_published_.store(kv_reserved_);
  if (metrics_ != nullptr) {
    metrics_->SetLoad(static_cast<int>(running_.size()), static_cast<int>(waiting_.size()),
                      static_cast<double>(kv_reserved_) / kv_budget_);
  }
}

absl::Status Scheduler::Run() {
  const Tokenizer& tokenizer = engine_->tokenizer();
  while (Intake()) {
    EngineStep step;
    std::vector<Sequence*> owners;  // per item
    int budget = options_.max_num_batched_tokens;
    int prefill_seqs = 0, decode_seqs = 0, prompt_tokens = 0;
    // 1. Decode: one token for every sequence past its prompt.
    for (auto& seq : running_) {
      if (seq->prefilled < seq->request.prompt.size() || budget == 0) continue;
      step.items.push_back({.id = seq->id, .tokens = {seq->last_token}, .sample = true});
      owners.push_back(seq.get());
      --budget;
      ++decode_seqs;
    }
    // 2. and 3. Prefill chunks: running sequences first, then newly admitted ones.
    auto add_prefill = [&](Sequence* seq) {
      const size_t left = seq->request.prompt.size() - seq->prefilled;
      const size_t n = std::min<size_t>(left, budget);
      EngineItem item;
      item.id = seq->id;
      item.tokens.assign(seq->request.prompt.begin() + seq->prefilled,
                         seq->request.prompt.begin() + seq->prefilled + n);
      item.sample = n == left;
      step.items.push_back(std::move(item));
      owners.push_back(seq);
      seq->prefilled += n;
      budget -= static_cast<int>(n);
      prompt_tokens += static_cast<int>(n);
      ++prefill_seqs;
    };
    for (auto& seq : running_) {
      if (budget == 0) break;
      if (seq->prefilled < seq->request.prompt.size()) add_prefill(seq.get());
    }
    const auto now = ServeClock::now();
    // Sequences released in this step still count against the engine's limit until its end.
    const int pending_release = static_cast<int>(to_release_.size());
    while (budget > 0 && !waiting_.empty() &&
           static_cast<int>(running_.size()) + pending_release < options_.max_num_seqs &&
           kv_reserved_ + waiting_.front()->capacity <= kv_budget_) {
      std::unique_ptr<Sequence> seq = std::move(waiting_.front());
      waiting_.pop_front();
      seq->id = next_id_++;
      seq->started = true;
      seq->first_scheduled = now;
      seq->output = std::make_unique<OutputProcessor>(tokenizer, seq->request, tokenizer.eos_id());
      kv_reserved_ += seq->capacity;
      step.start.push_back(
          {.id = seq->id, .sampling = seq->request.sampling, .capacity = seq->capacity});
      add_prefill(seq.get());
      running_.push_back(std::move(seq));
    }
    int64_t kv_released = 0;
    for (const auto& [id, capacity] : to_release_) {
      step.release.push_back(id);
      kv_released += capacity;
    }
    to_release_.clear();
    PublishStats();

    if (step.items.empty() && step.release.empty()) {
      wake_->WaitFor(options_.idle_wait);
      continue;
    }
    const auto t0 = ServeClock::now();
    absl::StatusOr<EngineStepResult> result = engine_->Step(step);
    const auto t1 = ServeClock::now();
    steps_.fetch_add(1);
    // Released whether the step ran or was rejected: a rejected release is not retried (it
    // would be rejected again); the engine then holds the sequence until shutdown.
    kv_reserved_ -= kv_released;
    if (!result.ok()) {
      if (result.status().code() != absl::StatusCode::kInvalidArgument) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          fatal_ = result.status();
        }
        FailAll(
            absl::UnavailableError(absl::StrCat("the engine failed: ", result.status().message())));
        PublishStats();
        return result.status();
      }
      // The engine rejected the step before running it (a scheduler bug): fail its requests,
      // keep serving. Sequences it was to start do not exist in the engine.
      for (const SequenceStart& s : step.start) {
        for (auto& seq : running_) {
          if (seq->id != s.id) continue;
          seq->started = false;
          kv_reserved_ -= seq->capacity;
        }
      }
      const absl::Status error = absl::InternalError(
          absl::StrCat("the engine rejected a step: ", result.status().message()));
      for (Sequence* seq : owners) FinishError(seq, error, "internal");
      std::erase_if(running_, [](const auto& s) { return s->done; });
      continue;
    }
    int generated = 0;
    for (size_t i = 0; i < owners.size(); ++i) {
      if (!step.items[i].sample) continue;
      const int32_t token = i < result->tokens.size() ? result->tokens[i] : -1;
      if (token < 0) {
        FinishError(owners[i], absl::InternalError("the engine returned no token"), "internal");
        continue;
      }
      ++generated;
      Emit(owners[i], token, t1);
    }
    if (metrics_ != nullptr) {
      metrics_->OnStep(Seconds(t1 - t0), options_.max_num_batched_tokens - budget, prefill_seqs,
                       decode_seqs);
      metrics_->OnPromptTokens(prompt_tokens);
      metrics_->OnGenerationTokens(generated);
    }
    std::erase_if(running_, [](const auto& s) { return s->done; });
  }
  PublishStats();
  return absl::OkStatus();
}

}  // namespace tritmoe
