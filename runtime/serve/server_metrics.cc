#include "runtime/serve/server_metrics.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "prometheus/text_serializer.h"

namespace tritmoe {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Registry;

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

Family<Counter>& CounterFamily(Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
Family<Gauge>& GaugeFamily(Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
Family<Histogram>& HistogramFamily(Registry& r, const char* name, const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

}  // namespace

ServerMetrics::ServerMetrics(std::string model_name, int world_size)
    : model_(std::move(model_name)), world_size_(world_size) {
  TM_CHECK(world_size >= 1) << "ServerMetrics: world_size " << world_size;
  Registry& r = registry_;
  const prometheus::Labels m = {{"model_name", model_}};
  GaugeFamily(r, "tritmoe_build_info", "Build and job information (value 1).")
      .Add({{"version", TRITMOE_VERSION}, {"world_size", absl::StrCat(world_size)}})
      .Set(1);
  running_ =
      &GaugeFamily(r, "tritmoe_num_requests_running", "Requests in the running batch.").Add(m);
  waiting_ =
      &GaugeFamily(r, "tritmoe_num_requests_waiting", "Requests in the admission queue.").Add(m);
  prompt_tokens_ =
      &CounterFamily(r, "tritmoe_prompt_tokens_total", "Prompt tokens prefilled.").Add(m);
  generation_tokens_ =
      &CounterFamily(r, "tritmoe_generation_tokens_total", "Tokens generated.").Add(m);
  success_ = &CounterFamily(r, "tritmoe_request_success_total", "Requests finished, by reason.");
  failure_ = &CounterFamily(r, "tritmoe_request_failure_total", "Requests failed, by reason.");
  for (const char* reason : {"stop", "length", "abort"}) {
    success_->Add({{"model_name", model_}, {"finished_reason", reason}});
  }
  ttft_ = &HistogramFamily(r, "tritmoe_time_to_first_token_seconds",
                           "Arrival to the first generated token.")
               .Add(m, kTtftBuckets);
  itl_ = &HistogramFamily(r, "tritmoe_inter_token_latency_seconds",
                          "Time between consecutive tokens of a request.")
              .Add(m, kItlBuckets);
  e2e_ = &HistogramFamily(r, "tritmoe_e2e_request_latency_seconds", "Arrival to completion.")
              .Add(m, kLatencyBuckets);
  queue_time_ = &HistogramFamily(r, "tritmoe_request_queue_time_seconds",
                                 "Arrival to the first engine step of a request.")
                     .Add(m, kTtftBuckets);
  request_prompt_tokens_ =
      &HistogramFamily(r, "tritmoe_request_prompt_tokens", "Prompt length of finished requests.")
           .Add(m, kTokenBuckets);
  request_generation_tokens_ = &HistogramFamily(r, "tritmoe_request_generation_tokens",
                                                "Generated tokens of finished requests.")
                                    .Add(m, kTokenBuckets);
  iteration_tokens_ = &HistogramFamily(r, "tritmoe_iteration_tokens_total",
                                       "Tokens (prefill and decode) per engine step.")
                           .Add(m, kTokenBuckets);
  step_duration_ = &HistogramFamily(r, "tritmoe_step_duration_seconds",
                                    "Wall time of one engine step (all ranks, driver's view).")
                        .Add(m, kStepBuckets);
  Family<Gauge>& batch =
      GaugeFamily(r, "tritmoe_batch_size", "Sequences in the last engine step, by phase.");
  batch_prefill_ = &batch.Add({{"model_name", model_}, {"phase", "prefill"}});
  batch_decode_ = &batch.Add({{"model_name", model_}, {"phase", "decode"}});

  Family<Gauge>& kv =
      GaugeFamily(r, "tritmoe_kv_cache_usage_perc",
                  "KV cache tokens reserved by the rank's running requests over its budget (0-1).");
  Family<Counter>& phase = CounterFamily(
      r, "tritmoe_step_phase_seconds_total",
      "Engine step wall time of each rank, by phase (attention, moe_compute, dispatch, combine, "
      "other).");
  Family<Counter>& rank_tokens =
      CounterFamily(r, "tritmoe_rank_tokens_total", "New tokens of the sequences each rank holds.");
  imbalance_ = &GaugeFamily(r, "tritmoe_expert_load_imbalance",
                            "Max over mean routed tokens per rank of a MoE layer under the expert "
                            "placement in use, over the last window (1 = balanced).");
  cache_hits_ =
      &CounterFamily(r, "tritmoe_expert_cache_hits_total",
                     "Routed experts found in the expert caches, by MoE layer (all ranks).");
  cache_misses_ = &CounterFamily(r, "tritmoe_expert_cache_misses_total",
                                 "Routed experts fetched on demand into the expert caches, by MoE "
                                 "layer (all ranks).");
  cache_bytes_ = &CounterFamily(r, "tritmoe_expert_cache_bytes_streamed_total",
                                "Bytes read into the expert caches (on demand and prefetched), by "
                                "MoE layer (all ranks).");
  cache_stall_ = &CounterFamily(r, "tritmoe_expert_cache_stall_seconds_total",
                                "Time the forward pass waited for expert bytes, by MoE layer (the "
                                "ranks' stalls added up).");
  cache_hit_rate_ = &GaugeFamily(r, "tritmoe_expert_cache_hit_rate",
                                 "Expert cache hits over requests, all layers and ranks, over the "
                                 "last window (~1 s).");
  cache_bytes_per_token_ = &GaugeFamily(r, "tritmoe_expert_cache_bytes_per_token",
                                        "Bytes streamed into the expert caches (all layers and "
                                        "ranks) per token, over the last window (~1 s).");
  cache_slots_ = &GaugeFamily(r, "tritmoe_expert_cache_slots_per_layer",
                              "Experts the caches of one MoE layer hold, summed over the ranks.");
  for (int rank = 0; rank < world_size; ++rank) {
    const std::string rs = absl::StrCat(rank);
    auto phase_series = [&](const char* name) {
      return &phase.Add({{"model_name", model_}, {"rank", rs}, {"phase", name}});
    };
    RankSeries s;
    s.attention = phase_series("attention");
    s.moe_compute = phase_series("moe_compute");
    s.dispatch = phase_series("dispatch");
    s.combine = phase_series("combine");
    s.other = phase_series("other");
    s.tokens = &rank_tokens.Add({{"model_name", model_}, {"rank", rs}});
    s.kv_usage = &kv.Add({{"model_name", model_}, {"rank", rs}});
    ranks_.push_back(s);
  }
}

void ServerMetrics::SetLoad(int running, int waiting) {
  running_->Set(running);
  waiting_->Set(waiting);
}

void ServerMetrics::SetKvUsage(std::span<const double> usage) {
  for (size_t r = 0; r < usage.size() && r < ranks_.size(); ++r) ranks_[r].kv_usage->Set(usage[r]);
}

void ServerMetrics::OnStep(double seconds, int tokens, int prefill_seqs, int decode_seqs) {
  step_duration_->Observe(seconds);
  iteration_tokens_->Observe(tokens);
  batch_prefill_->Set(prefill_seqs);
  batch_decode_->Set(decode_seqs);
}

void ServerMetrics::OnRankTimes(std::span<const StepPhaseTimes> rank_times) {
  // prometheus-cpp's Counter::Increment ignores negative amounts, as a counter must.
  for (size_t r = 0; r < rank_times.size() && r < ranks_.size(); ++r) {
    const StepPhaseTimes& t = rank_times[r];
    const RankSeries& s = ranks_[r];
    s.attention->Increment(t.attention_s);
    s.moe_compute->Increment(t.moe_compute_s);
    s.dispatch->Increment(t.dispatch_s);
    s.combine->Increment(t.combine_s);
    s.other->Increment(t.other_s);
    s.tokens->Increment(static_cast<double>(t.tokens));
  }
}

void ServerMetrics::SetExpertLoadImbalance(int layer, double max_over_mean) {
  imbalance_->Add({{"model_name", model_}, {"layer", absl::StrCat(layer)}}).Set(max_over_mean);
}

void ServerMetrics::OnExpertCacheStats(const ExpertCacheStats& stats) {
  int64_t hits = 0, requests = 0, bytes = 0, tokens = 0;
  for (size_t i = 0; i < stats.layers.size(); ++i) {
    const LayerCacheStats& now = stats.layers[i];
    const LayerCacheStats before = i < last_cache_.size() ? last_cache_[i] : LayerCacheStats{};
    const prometheus::Labels labels = {{"model_name", model_}, {"layer", absl::StrCat(i)}};
    // Counter::Increment ignores negative amounts: a counter never goes back.
    cache_hits_->Add(labels).Increment(static_cast<double>(now.hits - before.hits));
    cache_misses_->Add(labels).Increment(static_cast<double>(now.misses - before.misses));
    cache_bytes_->Add(labels).Increment(static_cast<double>(now.bytes_read - before.bytes_read));
    cache_stall_->Add(labels).Increment(now.stall_s - before.stall_s);
    hits += now.hits - before.hits;
    requests += now.requests() - before.requests();
    bytes += now.bytes_read - before.bytes_read;
    // Every token passes every MoE layer: the window's tokens are the most any layer saw.
    tokens = std::max(tokens, now.tokens - before.tokens);
  }
  last_cache_ = stats.layers;
  const prometheus::Labels m = {{"model_name", model_}};
  if (requests > 0) cache_hit_rate_->Add(m).Set(static_cast<double>(hits) / requests);
  if (tokens > 0) {
    cache_bytes_per_token_->Add(m).Set(static_cast<double>(bytes) / tokens);
  } else {
    cache_bytes_per_token_->Add(m);  // the series exists (at 0) until a window has tokens
  }
  if (requests == 0) cache_hit_rate_->Add(m);
  cache_slots_->Add(m).Set(static_cast<double>(stats.slots_per_layer));
}

void ServerMetrics::OnPromptTokens(int n) { prompt_tokens_->Increment(n); }
void ServerMetrics::OnGenerationTokens(int n) { generation_tokens_->Increment(n); }
void ServerMetrics::OnFirstToken(double ttft_seconds) { ttft_->Observe(ttft_seconds); }
void ServerMetrics::OnInterToken(double seconds) { itl_->Observe(seconds); }

void ServerMetrics::OnFinished(const StreamCompletion& c) {
  success_->Add({{"model_name", model_}, {"finished_reason", OpenAiFinishReason(c.finish)}})
      .Increment();
  e2e_->Observe(c.e2e_seconds);
  queue_time_->Observe(c.queue_seconds);
  request_prompt_tokens_->Observe(c.prompt_tokens);
  request_generation_tokens_->Observe(c.completion_tokens);
}

void ServerMetrics::OnFailed(const char* reason) {
  failure_->Add({{"model_name", model_}, {"reason", reason}}).Increment();
}

std::string ServerMetrics::Render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_.Collect());
  return out.str();
}

}  // namespace tritmoe
