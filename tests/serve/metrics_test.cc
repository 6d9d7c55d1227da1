// ServerMetrics on prometheus-cpp: the exported text, read back by an independent parser
// (prom_text.h), holds every family with its TYPE, counters and gauges with the values fed in,
// histograms with cumulative buckets / +Inf / _sum / _count, and the per-rank series (KV usage,
// step phases, tokens) and per-layer expert-load imbalance.
#include "runtime/serve/server_metrics.h"

#include <string>

#include "gtest/gtest.h"
#include "prom_text.h"

namespace tritmoe {
namespace {

using ::tritmoe::testing::ParsePromText;
using ::tritmoe::testing::PromSample;
using ::tritmoe::testing::PromValue;

bool HasLine(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(ServerMetricsTest, ExportsEveryFamilyWithItsType) {
  ServerMetrics m("tiny", 2);
  const std::string text = m.Render();
  for (const PromSample& s : ParsePromText(text)) EXPECT_NE(s.name, "!bad") << text;
  for (const char* counter : {"tritmoe_prompt_tokens_total", "tritmoe_generation_tokens_total",
                              "tritmoe_request_success_total", "tritmoe_step_phase_seconds_total",
                              "tritmoe_rank_tokens_total"}) {
    EXPECT_TRUE(HasLine(text, std::string("# TYPE ") + counter + " counter")) << counter;
  }
  for (const char* gauge :
       {"tritmoe_num_requests_running", "tritmoe_num_requests_waiting",
        "tritmoe_kv_cache_usage_perc", "tritmoe_batch_size", "tritmoe_build_info"}) {
    EXPECT_TRUE(HasLine(text, std::string("# TYPE ") + gauge + " gauge")) << gauge;
  }
  for (const char* histogram :
       {"tritmoe_time_to_first_token_seconds", "tritmoe_inter_token_latency_seconds",
        "tritmoe_e2e_request_latency_seconds", "tritmoe_request_queue_time_seconds",
        "tritmoe_request_prompt_tokens", "tritmoe_request_generation_tokens",
        "tritmoe_iteration_tokens_total", "tritmoe_step_duration_seconds"}) {
    EXPECT_TRUE(HasLine(text, std::string("# TYPE ") + histogram + " histogram")) << histogram;
  }
  EXPECT_EQ(PromValue(text, "tritmoe_build_info",
                      {{"version", TRITMOE_VERSION_FOR_TEST}, {"world_size", "2"}}),
            1.0);
  // Every success reason exists from the start (at 0), so rate() works before the first one.
  for (const char* reason : {"stop", "length", "abort"}) {
    EXPECT_EQ(PromValue(text, "tritmoe_request_success_total",
                        {{"model_name", "tiny"}, {"finished_reason", reason}}),
              0.0);
  }
  // Per-rank series exist for every rank before any step.
  for (const char* rank : {"0", "1"}) {
    EXPECT_EQ(
        PromValue(text, "tritmoe_rank_tokens_total", {{"model_name", "tiny"}, {"rank", rank}}),
        0.0);
    EXPECT_EQ(
        PromValue(text, "tritmoe_kv_cache_usage_perc", {{"model_name", "tiny"}, {"rank", rank}}),
        0.0);
  }
}

TEST(ServerMetricsTest, CountersGaugesAndHistogramsCarryTheirValues) {
  ServerMetrics m("tiny", 1);
  m.OnPromptTokens(3);
  m.OnPromptTokens(4);
  m.OnGenerationTokens(5);
  m.SetLoad(3, 9);
  m.OnFailed("queue_full");
  m.OnFailed("queue_full");
  m.OnFirstToken(0.05);
  m.OnFirstToken(0.1);  // on a bound: counted in that bucket
  m.OnFirstToken(2);
  m.OnFirstToken(100);  // beyond the last bound: only +Inf
  m.OnStep(0.003, 17, 1, 4);
  StreamCompletion c;
  c.finish = ServeFinish::kLength;
  c.prompt_tokens = 7;
  c.completion_tokens = 5;
  c.e2e_seconds = 1.25;
  m.OnFinished(c);
  const std::string t = m.Render();
  const std::map<std::string, std::string> model = {{"model_name", "tiny"}};
  EXPECT_EQ(PromValue(t, "tritmoe_prompt_tokens_total", model), 7.0) << t;
  EXPECT_EQ(PromValue(t, "tritmoe_generation_tokens_total", model), 5.0);
  EXPECT_EQ(PromValue(t, "tritmoe_num_requests_running", model), 3.0);
  EXPECT_EQ(PromValue(t, "tritmoe_num_requests_waiting", model), 9.0);
  EXPECT_EQ(PromValue(t, "tritmoe_request_failure_total",
                      {{"model_name", "tiny"}, {"reason", "queue_full"}}),
            2.0);
  EXPECT_EQ(PromValue(t, "tritmoe_request_success_total",
                      {{"model_name", "tiny"}, {"finished_reason", "length"}}),
            1.0);
  auto bucket = [&](const char* le) {
    return PromValue(t, "tritmoe_time_to_first_token_seconds_bucket",
                     {{"model_name", "tiny"}, {"le", le}});
  };
  EXPECT_EQ(bucket("0.04"), 0.0);
  EXPECT_EQ(bucket("0.06"), 1.0);
  EXPECT_EQ(bucket("0.1"), 2.0);
  EXPECT_EQ(bucket("2.5"), 3.0);
  EXPECT_EQ(bucket("80"), 3.0);
  EXPECT_EQ(bucket("+Inf"), 4.0);
  EXPECT_NEAR(*PromValue(t, "tritmoe_time_to_first_token_seconds_sum", model), 102.15, 1e-9);
  EXPECT_EQ(PromValue(t, "tritmoe_time_to_first_token_seconds_count", model), 4.0);
  EXPECT_EQ(PromValue(t, "tritmoe_request_prompt_tokens_sum", model), 7.0);
  EXPECT_EQ(PromValue(t, "tritmoe_e2e_request_latency_seconds_count", model), 1.0);
  EXPECT_EQ(
      PromValue(t, "tritmoe_iteration_tokens_total_bucket", {{"model_name", "tiny"}, {"le", "20"}}),
      1.0);
  EXPECT_EQ(
      PromValue(t, "tritmoe_iteration_tokens_total_bucket", {{"model_name", "tiny"}, {"le", "10"}}),
      0.0);
  EXPECT_EQ(PromValue(t, "tritmoe_batch_size", {{"model_name", "tiny"}, {"phase", "decode"}}), 4.0);
  EXPECT_EQ(PromValue(t, "tritmoe_batch_size", {{"model_name", "tiny"}, {"phase", "prefill"}}),
            1.0);
}

TEST(ServerMetricsTest, PerRankPhasesTokensKvAndImbalance) {
  ServerMetrics m("tiny", 2);
  StepPhaseTimes a{.attention_s = 0.5,
                   .moe_compute_s = 0.25,
                   .dispatch_s = 0.125,
                   .combine_s = 0.0625,
                   .other_s = 1,
                   .tokens = 10};
  StepPhaseTimes b{.attention_s = 2, .moe_compute_s = 3, .dispatch_s = 0, .tokens = 1};
  const std::vector<StepPhaseTimes> step = {a, b};
  m.OnRankTimes(step);
  m.OnRankTimes(step);
  const std::vector<double> kv = {0.25, 0.75};
  m.SetKvUsage(kv);
  m.SetExpertLoadImbalance(0, 1.5);
  m.SetExpertLoadImbalance(3, 2.0);
  m.SetExpertLoadImbalance(0, 1.25);  // replaces
  const std::string t = m.Render();
  auto phase = [&](const char* rank, const char* name) {
    return PromValue(t, "tritmoe_step_phase_seconds_total",
                     {{"model_name", "tiny"}, {"rank", rank}, {"phase", name}});
  };
  EXPECT_EQ(phase("0", "attention"), 1.0) << t;
  EXPECT_EQ(phase("0", "moe_compute"), 0.5);
  EXPECT_EQ(phase("0", "dispatch"), 0.25);
  EXPECT_EQ(phase("0", "combine"), 0.125);
  EXPECT_EQ(phase("0", "other"), 2.0);
  EXPECT_EQ(phase("1", "attention"), 4.0);
  EXPECT_EQ(phase("1", "moe_compute"), 6.0);
  EXPECT_EQ(phase("1", "dispatch"), 0.0);
  EXPECT_EQ(PromValue(t, "tritmoe_rank_tokens_total", {{"model_name", "tiny"}, {"rank", "0"}}),
            20.0);
  EXPECT_EQ(PromValue(t, "tritmoe_rank_tokens_total", {{"model_name", "tiny"}, {"rank", "1"}}),
            2.0);
  EXPECT_EQ(PromValue(t, "tritmoe_kv_cache_usage_perc", {{"model_name", "tiny"}, {"rank", "1"}}),
            0.75);
  EXPECT_EQ(PromValue(t, "tritmoe_expert_load_imbalance", {{"model_name", "tiny"}, {"layer", "0"}}),
            1.25);
  EXPECT_EQ(PromValue(t, "tritmoe_expert_load_imbalance", {{"model_name", "tiny"}, {"layer", "3"}}),
            2.0);
  EXPECT_FALSE(
      PromValue(t, "tritmoe_expert_load_imbalance", {{"model_name", "tiny"}, {"layer", "1"}}));
  // Counters never go down: a negative phase time is ignored.
  m.OnRankTimes(std::vector<StepPhaseTimes>{{.attention_s = -5}});
  EXPECT_EQ(PromValue(m.Render(), "tritmoe_step_phase_seconds_total",
                      {{"model_name", "tiny"}, {"rank", "0"}, {"phase", "attention"}}),
            1.0);
}

TEST(PromTextTest, ParsesLabelsEscapesAndInf) {
  const auto samples = ParsePromText(
      "# HELP x y\n# TYPE x counter\nx 3\ny{a=\"q\\\"\\\\\\n\",b=\"2\"} +Inf\nz{le=\"0.5\"} "
      "1e-3\n");
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].name, "x");
  EXPECT_EQ(samples[0].value, 3);
  EXPECT_EQ(samples[1].labels.at("a"), "q\"\\\n");
  EXPECT_EQ(samples[1].labels.at("b"), "2");
  EXPECT_TRUE(std::isinf(samples[1].value));
  EXPECT_EQ(samples[2].value, 1e-3);
  EXPECT_EQ(ParsePromText("x{a=1} 2\n")[0].name, "!bad");
}

}  // namespace
}  // namespace tritmoe

namespace tritmoe {
namespace {

ExpertCacheStats CacheStats(int64_t slots, std::vector<LayerCacheStats> layers) {
  ExpertCacheStats s;
  s.slots_per_layer = slots;
  s.layers = std::move(layers);
  return s;
}

LayerCacheStats Layer(int layer, int64_t tokens, int64_t hits, int64_t misses, int64_t bytes,
                      double stall) {
  LayerCacheStats l;
  l.layer = layer;
  l.tokens = tokens;
  l.hits = hits;
  l.misses = misses;
  l.bytes_read = bytes;
  l.stall_s = stall;
  return l;
}

// The cache counters follow the cumulative statistics they are fed (advanced by differences), per
// MoE layer index; the hit rate and bytes per token are those of the last window (all layers), and
// stay put over a window without requests or tokens; no series exists before the first call.
TEST(ServerMetricsTest, ExpertCacheCountersAndWindowGauges) {
  ServerMetrics m("tiny", 2);
  const std::string before = m.Render();
  EXPECT_EQ(before.find("tritmoe_expert_cache_hits_total{"), std::string::npos) << before;
  EXPECT_EQ(before.find("tritmoe_expert_cache_hit_rate{"), std::string::npos);
  auto value = [&](const std::string& text, const char* name, const char* layer) {
    return PromValue(text, name, {{"model_name", "tiny"}, {"layer", layer}});
  };
  auto total = [&](const std::string& text, const char* name) {
    return PromValue(text, name, {{"model_name", "tiny"}});
  };
  // Model layers 3 and 4 are MoE layers 0 and 1.
  m.OnExpertCacheStats(
      CacheStats(7, {Layer(3, 10, 6, 4, 4000, 0.5), Layer(4, 10, 2, 8, 8000, 0.25)}));
  std::string text = m.Render();
  for (const char* counter :
       {"tritmoe_expert_cache_hits_total", "tritmoe_expert_cache_misses_total",
        "tritmoe_expert_cache_bytes_streamed_total", "tritmoe_expert_cache_stall_seconds_total"}) {
    EXPECT_TRUE(HasLine(text, std::string("# TYPE ") + counter + " counter")) << counter;
  }
  EXPECT_EQ(value(text, "tritmoe_expert_cache_hits_total", "0"), 6.0) << text;
  EXPECT_EQ(value(text, "tritmoe_expert_cache_misses_total", "1"), 8.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_bytes_streamed_total", "1"), 8000.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_stall_seconds_total", "0"), 0.5);
  EXPECT_EQ(total(text, "tritmoe_expert_cache_hit_rate"), 8.0 / 20.0);
  EXPECT_EQ(total(text, "tritmoe_expert_cache_bytes_per_token"), 12000.0 / 10.0);
  EXPECT_EQ(total(text, "tritmoe_expert_cache_slots_per_layer"), 7.0);

  // Second window: 5 tokens, layer 0 +9 hits +1 miss, layer 1 +10 hits, 1000 more bytes.
  m.OnExpertCacheStats(
      CacheStats(7, {Layer(3, 15, 15, 5, 5000, 0.75), Layer(4, 15, 12, 8, 8000, 0.25)}));
  text = m.Render();
  EXPECT_EQ(value(text, "tritmoe_expert_cache_hits_total", "0"), 15.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_hits_total", "1"), 12.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_misses_total", "0"), 5.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_bytes_streamed_total", "0"), 5000.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_stall_seconds_total", "0"), 0.75);
  EXPECT_EQ(total(text, "tritmoe_expert_cache_hit_rate"), 19.0 / 20.0);
  EXPECT_EQ(total(text, "tritmoe_expert_cache_bytes_per_token"), 1000.0 / 5.0);

  // An idle window keeps the gauges; a counter that went back (never in an engine) stays.
  m.OnExpertCacheStats(
      CacheStats(7, {Layer(3, 15, 15, 5, 5000, 0.75), Layer(4, 15, 11, 8, 8000, 0.25)}));
  text = m.Render();
  EXPECT_EQ(total(text, "tritmoe_expert_cache_hit_rate"), 19.0 / 20.0);
  EXPECT_EQ(total(text, "tritmoe_expert_cache_bytes_per_token"), 200.0);
  EXPECT_EQ(value(text, "tritmoe_expert_cache_hits_total", "1"), 12.0);
}

}  // namespace
}  // namespace tritmoe
