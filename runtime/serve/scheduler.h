// Continuous batching on the driver rank: the scheduler owns the admission queue and the running
// batch, and drives Engine::Step.
//
// Every step is built from, in this order:
//   1. one decode token for every running sequence that has finished its prompt;
//   2. the next prefill chunk of running sequences still in their prompt (oldest first);
//   3. newly admitted requests (FCFS) with their first prefill chunk, while fewer than
//      max_num_seqs run and the rank the Engine will place the sequence on has KV room for
//      prompt + max_tokens (KvLedger: capacity is accounted per rank; a request that does not fit
//      its rank waits);
// all bounded by max_num_batched_tokens tokens per step (chunked prefill: a long prompt takes
// several steps; the last chunk samples the first token). Prompts are cut at fixed multiples of
// max_num_batched_tokens - max_num_seqs tokens from their start, so a prompt is chunked the same
// way whatever else runs, and greedy output does not depend on the other requests. Requests join
// and leave between steps: a finished, cancelled, aborted or timed-out sequence is released in the
// next step.
//
// Between steps, about once per routing_stats_interval, the loop collects the Engine's routing
// statistics and its expert caches' statistics (collectives, so only here, never from a front-end
// thread) and publishes each MoE layer's expert-load imbalance over the window since the last
// collection and the expert cache series. It also collects while idle once the interval has
// passed since steps ran, so that the end of a burst is published without waiting for the next.
//
// Threads: Run() is the scheduler loop and must run on the thread that may call the engine
// (with MPI, the thread that initialized it). Submit, Abort, Stop and stats() may be called from
// any thread (the HTTP and gRPC handlers).
//
// Failures: a request that fails alone gets an error Status on its stream; the server goes on.
// An engine error other than InvalidArgument is fatal (the job must end): every request gets
// Unavailable, new ones are refused, and Run returns the error.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/routing_stats.h"
#include "runtime/engine/engine.h"
#include "runtime/serve/kv_ledger.h"
#include "runtime/serve/output_processor.h"
#include "runtime/serve/request_stream.h"
#include "runtime/serve/serve_request.h"
#include "runtime/serve/server_metrics.h"

namespace tritmoe {

struct SchedulerOptions {
  int max_num_seqs = 64;              // running sequences; <= EngineOptions::max_sequences
  int max_num_batched_tokens = 2048;  // tokens per step; <= EngineOptions::max_tokens_per_step
  int max_waiting = 4096;             // admission queue; beyond it Submit is ResourceExhausted
  // KV cache tokens that the running requests placed on one rank may reserve (each reserves
  // prompt + max_tokens on its rank); 0: no limit beyond the sequences a rank can get
  // (ceil(max_num_seqs / ranks)) of the engine's max context each.
  int64_t kv_cache_tokens_per_rank = 0;
  // How often the loop collects routing statistics for tritmoe_expert_load_imbalance and the
  // expert caches' statistics for tritmoe_expert_cache_* (only after steps ran); zero: never.
  absl::Duration routing_stats_interval = absl::Seconds(1);
  // How long an idle scheduler sleeps before rechecking deadlines.
  absl::Duration idle_wait = absl::Milliseconds(50);

  // InvalidArgument naming the field. max_num_batched_tokens must be >= max_num_seqs (every
  // running sequence decodes one token per step).
  absl::Status Validate() const;
};

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  double kv_usage = 0;                    // max over ranks of reserved / budget
  std::vector<double> kv_usage_per_rank;  // [ranks]
  int64_t steps = 0;
  bool draining = false;
};

class Scheduler {
 public:
  // engine and metrics must outlive the scheduler; metrics may be null.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Engine* engine,
                                                           const SchedulerOptions& options,
                                                           ServerMetrics* metrics);
  ~Scheduler();

  // Queues a request. ResourceExhausted when the queue is full, Unavailable once stopping,
  // AlreadyExists when its request_id is live.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(ServeRequest request);

  // Ends the live requests with these ids (finish reason kAbort); returns how many were live.
  int Abort(const std::vector<std::string>& request_ids);

  // The loop. Returns after Stop (OK) once every live request got its terminal event, or with
  // the engine's error.
  absl::Status Run();

  // Stops admitting requests; after `drain`, ends the live ones with kAbort and makes Run
  // return. Callable from any thread (e.g. a signal watcher), any number of times.
  void Stop(absl::Duration drain = absl::ZeroDuration());

  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }
  int64_t kv_budget_per_rank() const { return kv_budget_; }

 private:
  struct Sequence {
    uint64_t id = 0;  // engine sequence id
    ServeRequest request;
    std::shared_ptr<RequestStream> stream;
    std::unique_ptr<OutputProcessor> output;
    int64_t capacity = 0;  // KV tokens reserved
    int rank = -1;         // where the Engine placed it (KvLedger), once started
    size_t prefilled = 0;  // prompt tokens already in the KV cache
    int32_t last_token = -1;
    bool started = false;  // the engine knows the sequence
    bool done = false;     // terminal event pushed
    ServeClock::time_point first_scheduled{};
    ServeClock::time_point first_token{};
    ServeClock::time_point last_token_time{};
  };

  // Wakes the loop. Shared with the request streams (Cancel/Abort), which may outlive us.
  class WakeSignal {
   public:
    void Notify();
    // Returns when notified (consuming it) or after `timeout`.
    void WaitFor(absl::Duration timeout);

   private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool pending_ = false;
  };

  Scheduler(Engine* engine, const SchedulerOptions& options, ServerMetrics* metrics);

  // Moves submissions into waiting_, handles cancel/abort/deadline/stop. Returns false when the
  // loop should end.
  bool Intake();
  // Ends a sequence: pushes the terminal event and marks it for release if started.
  void FinishOk(Sequence* seq, ServeFinish finish);
  void FinishError(Sequence* seq, absl::Status status, const char* reason);
  // Common end: marks for release, returns the KV reservation, forgets the request id.
  void Retire(Sequence* seq);
  // Delivers one sampled token.
  void Emit(Sequence* seq, int32_t token, ServeClock::time_point now);
  // Fails every live request (fatal engine error).
  void FailAll(const absl::Status& status);
  void PublishStats();
  // Every routing_stats_interval after steps ran: collects routing statistics and publishes the
  // imbalance of the window, and the expert cache statistics. An engine without statistics (or
  // without a cache) turns that part off; an error from a collective is fatal like a step's.
  absl::Status MaybeCollectStats();
  absl::Status CollectRoutingStats();
  absl::Status CollectExpertCacheStats();
  // The fatal end after a failed collection: fails every request, returns `s` for Run.
  absl::Status StatsFailed(absl::Status s);

  Engine* const engine_;
  const SchedulerOptions options_;
  ServerMetrics* const metrics_;
  const int64_t kv_budget_;

  const std::shared_ptr<WakeSignal> wake_ = std::make_shared<WakeSignal>();

  // Shared with other threads.
  mutable std::mutex mu_;
  std::deque<std::unique_ptr<Sequence>> submitted_;
  absl::flat_hash_map<std::string, std::weak_ptr<RequestStream>> live_;  // by request_id
  bool stopping_ = false;
  ServeClock::time_point stop_deadline_{};
  absl::Status fatal_;
  // Published by the loop for stats().
  std::atomic<int> n_running_{0};
  std::atomic<int> n_waiting_{0};
  std::vector<double> kv_usage_published_;  // mu_ held
  std::atomic<int64_t> steps_{0};

  // Scheduler thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // admission order
  // Finished sequences to release in the next step; their KV reservations (and their place in
  // the Engine's placement count) stay until that step has run (the engine frees them at its end).
  struct Release {
    uint64_t id;
    int rank;
    int64_t capacity;
  };
  std::vector<Release> to_release_;
  KvLedger ledger_;
  uint64_t next_id_ = 1;
  // Routing statistics: the last collection (cumulative), when, and whether to go on.
  bool routing_stats_enabled_ = true;
  bool cache_stats_enabled_ = true;  // until the engine says it has no expert cache
  RoutingStats last_routing_;
  ServeClock::time_point last_routing_time_{};
  int64_t steps_at_last_routing_ = 0;
};

}  // namespace tritmoe
