// The serving metrics (names after vLLM's, prefixed tritmoe_, label model_name), updated by the
// scheduler and the front-ends and rendered for GET /metrics:
//
//   tritmoe_num_requests_running / _waiting       gauges: running batch, admission queue
//   tritmoe_kv_cache_usage_perc                   gauge 0..1: reserved KV tokens / budget
//   tritmoe_prompt_tokens_total, _generation_tokens_total       counters
//   tritmoe_request_success_total{finished_reason=stop|length|abort}
//   tritmoe_request_failure_total{reason=invalid|not_found|queue_full|deadline|cancelled|internal}
//   tritmoe_time_to_first_token_seconds, _inter_token_latency_seconds,
//   tritmoe_e2e_request_latency_seconds, _request_queue_time_seconds     histograms
//   tritmoe_request_prompt_tokens, _request_generation_tokens            histograms (tokens)
//   tritmoe_iteration_tokens_total                histogram: tokens per engine step
//   tritmoe_step_duration_seconds                 histogram: engine step wall time
//   tritmoe_batch_size{phase=prefill|decode}      gauge: sequences in the last step
//   tritmoe_build_info{version,world_size}        gauge = 1
#pragma once

#include <string>

#include "runtime/serve/metrics.h"
#include "runtime/serve/request_stream.h"

namespace tritmoe {

class ServerMetrics {
 public:
  ServerMetrics(std::string model_name, int world_size);

  void SetLoad(int running, int waiting, double kv_usage);
  void OnStep(double seconds, int tokens, int prefill_seqs, int decode_seqs);
  void OnPromptTokens(int n);
  void OnGenerationTokens(int n);
  void OnFirstToken(double ttft_seconds);
  void OnInterToken(double seconds);
  void OnFinished(const StreamCompletion& c);
  // reason: one of the failure labels above.
  void OnFailed(const char* reason);

  std::string Render() const { return registry_.Render(); }
  const MetricsRegistry& registry() const { return registry_; }

 private:
  const LabelValues model_;
  MetricsRegistry registry_;
  MetricFamily* running_;
  MetricFamily* waiting_;
  MetricFamily* kv_usage_;
  MetricFamily* prompt_tokens_;
  MetricFamily* generation_tokens_;
  MetricFamily* success_;
  MetricFamily* failure_;
  MetricFamily* ttft_;
  MetricFamily* itl_;
  MetricFamily* e2e_;
  MetricFamily* queue_time_;
  MetricFamily* request_prompt_tokens_;
  MetricFamily* request_generation_tokens_;
  MetricFamily* iteration_tokens_;
  MetricFamily* step_duration_;
  MetricFamily* batch_size_;
};

}  // namespace tritmoe
