#include "runtime/serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/engine/expert_load.h"
#include "runtime/serve/field_error.h"

namespace tritmoe {
namespace {

double Seconds(ServeClock::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t KvBudgetPerRank(const SchedulerOptions& o, const Engine& engine) {
  if (o.kv_cache_tokens_per_rank > 0) return o.kv_cache_tokens_per_rank;
  // The most sequences one rank can get under fewest-live placement.
  const int64_t per_rank = (o.max_num_seqs + engine.num_ranks() - 1) / engine.num_ranks();
  return per_rank * engine.max_context();
}

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
  if (kv_cache_tokens_per_rank < 0) {
    return FieldError("kv_cache_tokens_per_rank",
                      absl::StrCat("must be >= 0, got ", kv_cache_tokens_per_rank));
  }
  if (routing_stats_interval < absl::ZeroDuration()) {
    return FieldError("routing_stats_interval", "must be >= 0");
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
      kv_budget_(KvBudgetPerRank(options, *engine)),
      ledger_(engine->num_ranks(), kv_budget_) {
  kv_usage_published_.assign(engine->num_ranks(), 0.0);
}

Scheduler::~Scheduler() = default;

absl::StatusOr<std::shared_ptr<RequestStream>> Scheduler::Submit(ServeRequest request) {
  const int64_t capacity =
      static_cast<int64_t>(request.prompt.size()) + request.sampling.max_tokens;
  if (capacity > kv_budget_) {
    return FieldError(
        "max_tokens",
        absl::StrCat("prompt (", request.prompt.size(), " tokens) + max_tokens (",
                     request.sampling.max_tokens, ") exceeds the KV cache budget of one rank, ",
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
  s.steps = steps_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.draining = stopping_;
  s.kv_usage_per_rank = kv_usage_published_;
  for (double u : s.kv_usage_per_rank) s.kv_usage = std::max(s.kv_usage, u);
  return s;
}

void Scheduler::Retire(Sequence* seq) {
  seq->done = true;
  if (seq->started) {
    to_release_.push_back({seq->id, seq->rank, seq->capacity});
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
  // Releases still pending go to the engine first, so nothing stays reserved on a rank.
  return !(stopping && waiting_.empty() && running_.empty() && to_release_.empty());
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
  std::vector<double> usage(ledger_.num_ranks());
  for (int r = 0; r < ledger_.num_ranks(); ++r) usage[r] = ledger_.usage(r);
  if (metrics_ != nullptr) {
    metrics_->SetLoad(static_cast<int>(running_.size()), static_cast<int>(waiting_.size()));
    metrics_->SetKvUsage(usage);
  }
  std::lock_guard<std::mutex> lock(mu_);
  kv_usage_published_ = std::move(usage);
}

absl::Status Scheduler::MaybeCollectStats() {
  if ((!routing_stats_enabled_ && !cache_stats_enabled_) ||
      options_.routing_stats_interval == absl::ZeroDuration()) {
    return absl::OkStatus();
  }
  const auto now = ServeClock::now();
  const int64_t steps = steps_.load();
  if (steps == steps_at_last_routing_ ||
      now - last_routing_time_ < absl::ToChronoNanoseconds(options_.routing_stats_interval)) {
    return absl::OkStatus();
  }
  steps_at_last_routing_ = steps;
  last_routing_time_ = now;
  if (routing_stats_enabled_) RETURN_IF_ERROR(CollectRoutingStats());
  if (cache_stats_enabled_) RETURN_IF_ERROR(CollectExpertCacheStats());
  return absl::OkStatus();
}

absl::Status Scheduler::CollectExpertCacheStats() {
  absl::StatusOr<std::optional<ExpertCacheStats>> stats = engine_->CollectExpertCacheStats();
  if (!stats.ok()) {
    if (stats.status().code() == absl::StatusCode::kUnimplemented) {
      cache_stats_enabled_ = false;
      return absl::OkStatus();
    }
    return stats.status();
  }
  // Whether a rank has a cache is fixed at start: without one now, never.
  if (!stats->has_value()) {
    cache_stats_enabled_ = false;
    return absl::OkStatus();
  }
  if (metrics_ != nullptr) metrics_->OnExpertCacheStats(**stats);
  return absl::OkStatus();
}

absl::Status Scheduler::StatsFailed(absl::Status s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    fatal_ = s;
  }
  FailAll(absl::UnavailableError(
      absl::StrCat("the engine failed collecting statistics: ", s.message())));
  PublishStats();
  return s;
}

absl::Status Scheduler::CollectRoutingStats() {
  absl::StatusOr<RoutingStats> stats = engine_->CollectRoutingStats();
  if (!stats.ok()) {
    const absl::StatusCode code = stats.status().code();
    if (code == absl::StatusCode::kUnimplemented || code == absl::StatusCode::kFailedPrecondition) {
      routing_stats_enabled_ = false;  // no statistics (or no MoE layers): nothing to publish
      return absl::OkStatus();
    }
    return stats.status();
  }
  // The window since the last collection: the counts are cumulative since the engine started.
  RoutingStats window = *stats;
  if (last_routing_.num_layers() == stats->num_layers() &&
      last_routing_.num_experts() == stats->num_experts()) {
    for (int l = 0; l < window.num_layers(); ++l) {
      for (int e = 0; e < window.num_experts(); ++e) window.Add(l, e, -last_routing_.count(l, e));
    }
  }
  last_routing_ = *std::move(stats);
  const std::vector<ExpertPlacement> placements = engine_->expert_placements();
  absl::StatusOr<std::vector<LayerLoad>> load = LayerLoadImbalance(window, placements);
  if (!load.ok()) {
    // A mismatch between the statistics and the placement is the engine's bug, not the job's.
    routing_stats_enabled_ = false;
    return absl::OkStatus();
  }
  for (size_t l = 0; l < load->size(); ++l) {
    double routed = 0;
    for (double t : (*load)[l].rank_tokens) routed += t;
    // A window without tokens in a layer says nothing about its balance: keep the last value.
    if (routed > 0 && metrics_ != nullptr) {
      metrics_->SetExpertLoadImbalance(static_cast<int>(l), (*load)[l].max_over_mean);
    }
  }
  return absl::OkStatus();
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
    // 2. and 3. Prefill chunks: running sequences first, then newly admitted ones. A prompt is cut
    // at fixed multiples of chunk_tokens from its start, never by what happens to be left of the
    // budget: how a prompt is chunked changes its numerics (a one-token chunk runs the absorbed
    // attention form, a longer one the naive form), and greedy output must not depend on the
    // other requests. Decode takes at most max_num_seqs tokens, so the first chunk always fits.
    const size_t chunk_tokens =
        static_cast<size_t>(std::max(1, options_.max_num_batched_tokens - options_.max_num_seqs));
    auto next_chunk = [&](const Sequence* seq) {
      const size_t end =
          std::min(seq->request.prompt.size(), (seq->prefilled / chunk_tokens + 1) * chunk_tokens);
      return end - seq->prefilled;
    };
    auto add_prefill = [&](Sequence* seq) {
      const size_t left = seq->request.prompt.size() - seq->prefilled;
      const size_t n = next_chunk(seq);
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
      if (seq->prefilled < seq->request.prompt.size() &&
          next_chunk(seq.get()) <= static_cast<size_t>(budget)) {
        add_prefill(seq.get());
      }
    }
    const auto now = ServeClock::now();
    // Sequences released in this step still count against the engine's limit until its end.
    const int pending_release = static_cast<int>(to_release_.size());
    while (budget > 0 && !waiting_.empty() &&
           static_cast<int>(running_.size()) + pending_release < options_.max_num_seqs &&
           ledger_.FitsNext(waiting_.front()->capacity) &&
           next_chunk(waiting_.front().get()) <= static_cast<size_t>(budget)) {
      std::unique_ptr<Sequence> seq = std::move(waiting_.front());
      waiting_.pop_front();
      seq->id = next_id_++;
      seq->started = true;
      seq->first_scheduled = now;
      seq->output = std::make_unique<OutputProcessor>(tokenizer, seq->request, tokenizer.eos_id());
      seq->rank = ledger_.Start(seq->capacity);
      step.start.push_back(
          {.id = seq->id, .sampling = seq->request.sampling, .capacity = seq->capacity});
      add_prefill(seq.get());
      running_.push_back(std::move(seq));
    }
    std::vector<Release> released;
    released.swap(to_release_);
    for (const Release& r : released) step.release.push_back(r.id);
    PublishStats();

    if (step.items.empty() && step.release.empty()) {
      if (absl::Status s = MaybeCollectStats(); !s.ok()) return StatsFailed(s);
      wake_->WaitFor(options_.idle_wait);
      continue;
    }
    const auto t0 = ServeClock::now();
    absl::StatusOr<EngineStepResult> result = engine_->Step(step);
    const auto t1 = ServeClock::now();
    steps_.fetch_add(1);
    // Released whether the step ran or was rejected: a rejected release is not retried (it
    // would be rejected again); the engine then holds the sequence until shutdown.
    for (const Release& r : released) ledger_.Release(r.rank, r.capacity);
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
          ledger_.Release(seq->rank, seq->capacity);
        }
      }
      const absl::Status error = absl::InternalError(
          absl::StrCat("the engine rejected a step: ", result.status().message()));
      for (Sequence* seq : owners) FinishError(seq, error, "internal");
      std::erase_if(running_, [](const auto& s) { return s->done; });
      continue;
    }
    // The step's metrics go first, so a client that sees its request end also sees its tokens
    // counted.
    if (metrics_ != nullptr) {
      int generated = 0;
      for (size_t i = 0; i < owners.size(); ++i) {
        generated += step.items[i].sample && i < result->tokens.size() && result->tokens[i] >= 0;
      }
      metrics_->OnStep(Seconds(t1 - t0), options_.max_num_batched_tokens - budget, prefill_seqs,
                       decode_seqs);
      metrics_->OnPromptTokens(prompt_tokens);
      metrics_->OnGenerationTokens(generated);
      metrics_->OnRankTimes(result->rank_times);
    }
    for (size_t i = 0; i < owners.size(); ++i) {
      if (!step.items[i].sample) continue;
      const int32_t token = i < result->tokens.size() ? result->tokens[i] : -1;
      if (token < 0) {
        FinishError(owners[i], absl::InternalError("the engine returned no token"), "internal");
        continue;
      }
      Emit(owners[i], token, t1);
    }
    std::erase_if(running_, [](const auto& s) { return s->done; });
    if (absl::Status s = MaybeCollectStats(); !s.ok()) return StatsFailed(s);
  }
  PublishStats();
  return absl::OkStatus();
}

}  // namespace tritmoe
