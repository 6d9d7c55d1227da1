// The serving metrics on prometheus-cpp's core library (names after vLLM's, prefixed tritmoe_,
// label model_name; only per-rank series add `rank`), updated by the scheduler and the front-ends
// and rendered in the text exposition format 0.0.4 for GET /metrics on our own HTTP server:
//
//   tritmoe_num_requests_running / _waiting       gauges: running batch, admission queue
//   tritmoe_kv_cache_usage_perc{rank}             gauge 0..1: KV tokens reserved on the rank by
//                                                 its sequences (prompt + max_tokens) / its budget
//   tritmoe_prompt_tokens_total, _generation_tokens_total       counters
//   tritmoe_request_success_total{finished_reason=stop|length|abort}
//   tritmoe_request_failure_total{reason=invalid|not_found|queue_full|deadline|cancelled|internal}
//   tritmoe_time_to_first_token_seconds, _inter_token_latency_seconds,
//   tritmoe_e2e_request_latency_seconds, _request_queue_time_seconds     histograms
//   tritmoe_request_prompt_tokens, _request_generation_tokens            histograms (tokens)
//   tritmoe_iteration_tokens_total                histogram: tokens per engine step
//   tritmoe_step_duration_seconds                 histogram: engine step wall time (driver view)
//   tritmoe_batch_size{phase=prefill|decode}      gauge: sequences in the last step
//   tritmoe_step_phase_seconds_total{rank,phase=attention|moe_compute|dispatch|combine|other}
//                                                 counter: each rank's step time by phase
//   tritmoe_rank_tokens_total{rank}               counter: new tokens of the rank's sequences
//   tritmoe_expert_load_imbalance{layer}          gauge: max/mean routed tokens per rank under the
//                                                 placement in use, over the last window (~1 s)
//   tritmoe_expert_cache_hits_total{layer}, _misses_total{layer}
//                                                 counters: experts found in / fetched into the
//                                                 expert caches (CPU per rank, or the GPU's),
//                                                 summed over the ranks; sum over layer = total
//   tritmoe_expert_cache_bytes_streamed_total{layer}  counter: bytes read into the caches
//   tritmoe_expert_cache_stall_seconds_total{layer}   counter: forward passes waiting for expert
//                                                 bytes, the ranks' stalls added up
//   tritmoe_expert_cache_hit_rate                 gauge 0..1: all layers, over the last window
//   tritmoe_expert_cache_bytes_per_token          gauge: bytes streamed (all ranks, all layers) per
//                                                 token of the steps' batches, over the last window
//   tritmoe_expert_cache_slots_per_layer          gauge: experts one MoE layer's caches hold,
//   summed
//                                                 over the ranks (set against the layer's experts)
//   tritmoe_build_info{version,world_size}        gauge = 1
// The expert cache series (layer = MoE layer index, 0 = the first MoE layer, as for the
// imbalance) exist only when the engine has a cache, from the first collection (~1 s cadence).
//
// Thread-safe: prometheus-cpp's metrics are atomic or locked, and every series except the
// per-layer imbalance and expert cache ones is created here, up front.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "runtime/engine/engine.h"
#include "runtime/serve/request_stream.h"
#include "runtime/store/cache_stats.h"

namespace tritmoe {

class ServerMetrics {
 public:
  // world_size >= 1: the ranks that get per-rank series.
  ServerMetrics(std::string model_name, int world_size);

  void SetLoad(int running, int waiting);
  // usage[rank], 0..1; world_size entries (extra ones are ignored).
  void SetKvUsage(std::span<const double> usage);
  void OnStep(double seconds, int tokens, int prefill_seqs, int decode_seqs);
  // One step's phase times of every rank, indexed by rank (EngineStepResult::rank_times).
  void OnRankTimes(std::span<const StepPhaseTimes> rank_times);
  // MoE layer index (0 = the first MoE layer) and its max/mean routed tokens per rank.
  void SetExpertLoadImbalance(int layer, double max_over_mean);
  // The expert caches' statistics, cumulative since the engine started
  // (Engine::CollectExpertCacheStats; layers: every MoE layer, ascending). The counters advance by
  // the difference from the previous call (the first: from zero; a counter that went back is left
  // alone); the hit rate and bytes per token are those of that difference, and keep their last
  // value over a window without expert requests / tokens. One thread calls it (the scheduler's).
  void OnExpertCacheStats(const ExpertCacheStats& stats);
  void OnPromptTokens(int n);
  void OnGenerationTokens(int n);
  void OnFirstToken(double ttft_seconds);
  void OnInterToken(double seconds);
  void OnFinished(const StreamCompletion& c);
  // reason: one of the failure labels above.
  void OnFailed(const char* reason);

  // The exposition of every family.
  std::string Render() const;
  int world_size() const { return world_size_; }

 private:
  struct RankSeries {
    prometheus::Counter* attention;
    prometheus::Counter* moe_compute;
    prometheus::Counter* dispatch;
    prometheus::Counter* combine;
    prometheus::Counter* other;
    prometheus::Counter* tokens;
    prometheus::Gauge* kv_usage;
  };

  const std::string model_;
  const int world_size_;
  prometheus::Registry registry_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Family<prometheus::Counter>* failure_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* request_prompt_tokens_;
  prometheus::Histogram* request_generation_tokens_;
  prometheus::Histogram* iteration_tokens_;
  prometheus::Histogram* step_duration_;
  prometheus::Gauge* batch_prefill_;
  prometheus::Gauge* batch_decode_;
  prometheus::Family<prometheus::Gauge>* imbalance_;
  std::vector<RankSeries> ranks_;  // [world_size]
  prometheus::Family<prometheus::Counter>* cache_hits_;
  prometheus::Family<prometheus::Counter>* cache_misses_;
  prometheus::Family<prometheus::Counter>* cache_bytes_;
  prometheus::Family<prometheus::Counter>* cache_stall_;
  prometheus::Family<prometheus::Gauge>* cache_hit_rate_;
  prometheus::Family<prometheus::Gauge>* cache_bytes_per_token_;
  prometheus::Family<prometheus::Gauge>* cache_slots_;
  std::vector<LayerCacheStats> last_cache_;  // OnExpertCacheStats' previous layers
};

}  // namespace tritmoe
