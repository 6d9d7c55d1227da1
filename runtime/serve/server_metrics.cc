#include "runtime/serve/server_metrics.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tritmoe {
namespace {

// vLLM's/SGLang's ladders, so dashboards carry over.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                          0.1,   0.25,  0.5,  0.75, 1.0,  2.5,  5.0,
                                          7.5,   10.0,  20.0, 40.0, 80.0};
const std::vector<double> kItlBuckets = {0.001, 0.005, 0.01,  0.015, 0.02, 0.025, 0.03,
                                         0.04,  0.05,  0.075, 0.1,   0.15, 0.2,   0.3,
                                         0.4,   0.5,   0.75,  1.0,   2.5};
const std::vector<double> kLatencyBuckets = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,   2.5,
                                             5.0,  10.0,  15.0,  20.0,  30.0,  40.0,  50.0,
                                             60.0, 120.0, 240.0, 480.0, 960.0, 1920.0};
const std::vector<double> kTokenBuckets = {
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 131072};
const std::vector<double> kStepBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};

}  // namespace

ServerMetrics::ServerMetrics(std::string model_name, int world_size) : model_({model_name}) {
  MetricsRegistry& r = registry_;
  const std::vector<std::string> m = {"model_name"};
  r.AddGauge("tritmoe_build_info", "Build and job information (value 1).",
             {"version", "world_size"})
      ->Set({TRITMOE_VERSION, absl::StrCat(world_size)}, 1);
  running_ = r.AddGauge("tritmoe_num_requests_running", "Requests in the running batch.", m);
  waiting_ = r.AddGauge("tritmoe_num_requests_waiting", "Requests in the admission queue.", m);
  kv_usage_ = r.AddGauge("tritmoe_kv_cache_usage_perc",
                         "KV cache tokens reserved by running requests over the budget (0-1).", m);
  prompt_tokens_ = r.AddCounter("tritmoe_prompt_tokens_total", "Prompt tokens prefilled.", m);
  generation_tokens_ = r.AddCounter("tritmoe_generation_tokens_total", "Tokens generated.", m);
  success_ = r.AddCounter("tritmoe_request_success_total", "Requests finished, by reason.",
                          {"model_name", "finished_reason"});
  failure_ = r.AddCounter("tritmoe_request_failure_total", "Requests failed, by reason.",
                          {"model_name", "reason"});
  ttft_ = r.AddHistogram("tritmoe_time_to_first_token_seconds",
                         "Arrival to the first generated token.", m, kTtftBuckets);
  itl_ = r.AddHistogram("tritmoe_inter_token_latency_seconds",
                        "Time between consecutive tokens of a request.", m, kItlBuckets);
  e2e_ = r.AddHistogram("tritmoe_e2e_request_latency_seconds", "Arrival to completion.", m,
                        kLatencyBuckets);
  queue_time_ = r.AddHistogram("tritmoe_request_queue_time_seconds",
                               "Arrival to the first engine step of a request.", m, kTtftBuckets);
  request_prompt_tokens_ = r.AddHistogram("tritmoe_request_prompt_tokens",
                                          "Prompt length of finished requests.", m, kTokenBuckets);
  request_generation_tokens_ =
      r.AddHistogram("tritmoe_request_generation_tokens", "Generated tokens of finished requests.",
                     m, kTokenBuckets);
  iteration_tokens_ =
      r.AddHistogram("tritmoe_iteration_tokens_total",
                     "Tokens (prefill and decode) per engine step.", m, kTokenBuckets);
  step_duration_ = r.AddHistogram("tritmoe_step_duration_seconds",
                                  "Wall time of one engine step (all ranks).", m, kStepBuckets);
  batch_size_ = r.AddGauge("tritmoe_batch_size", "Sequences in the last engine step, by phase.",
                           {"model_name", "phase"});
  for (const char* reason : {"stop", "length", "abort"}) success_->Inc({model_[0], reason}, 0);
}

void ServerMetrics::SetLoad(int running, int waiting, double kv_usage) {
  running_->Set(model_, running);
  waiting_->Set(model_, waiting);
  kv_usage_->Set(model_, kv_usage);
}

void ServerMetrics::OnStep(double seconds, int tokens, int prefill_seqs, int decode_seqs) {
  step_duration_->Observe(model_, seconds);
  iteration_tokens_->Observe(model_, tokens);
  batch_size_->Set({model_[0], "prefill"}, prefill_seqs);
  batch_size_->Set({model_[0], "decode"}, decode_seqs);
}

void ServerMetrics::OnPromptTokens(int n) { prompt_tokens_->Inc(model_, n); }
void ServerMetrics::OnGenerationTokens(int n) { generation_tokens_->Inc(model_, n); }
void ServerMetrics::OnFirstToken(double ttft_seconds) { ttft_->Observe(model_, ttft_seconds); }
void ServerMetrics::OnInterToken(double seconds) { itl_->Observe(model_, seconds); }

void ServerMetrics::OnFinished(const StreamCompletion& c) {
  success_->Inc({model_[0], OpenAiFinishReason(c.finish)});
  e2e_->Observe(model_, c.e2e_seconds);
  queue_time_->Observe(model_, c.queue_seconds);
  request_prompt_tokens_->Observe(model_, c.prompt_tokens);
  request_generation_tokens_->Observe(model_, c.completion_tokens);
}

void ServerMetrics::OnFailed(const char* reason) { failure_->Inc({model_[0], reason}); }

}  // namespace tritmoe
