// What the Engine measures about itself, on one rank (LocalCommunicator), and the placement
// arithmetic built on it:
//   * StepPhaseTimes: one entry per rank, non-negative, tokens = the step's tokens, attention and
//     MoE compute seen in a prefill, dispatch/combine exactly 0 on one rank, and the phases adding
//     up to the driver's wall time of Step (less planning and messaging);
//   * CollectRoutingStats: every token's top-k choices counted once per MoE layer (each row sums
//     to tokens x k), the counts keep growing with steps, and Save/Load round-trips them;
//   * LayerLoadImbalance against hand-computed loads; a placement "balanced:<file>" made from
//     skewed statistics has a lower max/mean than contiguous on them, replicas lower still.
// The multi-rank counterparts (stats summed over ranks equal one rank's, balanced placement gives
// the same tokens) run under mpirun in ep_stats_mpi_test.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/expert_placement.h"
#include "comm/routing_stats.h"
#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_report.h"
#include "runtime/engine/expert_load.h"
#include "runtime/engine/placement_spec.h"
#include "runtime/modelgen/model_generator.h"

namespace tritmoe {
namespace {

std::string Dir() {
  static std::string dir = [] {
    auto d = std::filesystem::path(::testing::TempDir()) /
             ("tritmoe_engine_metrics_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

std::string TinyModel() {
  const std::string path = Dir() + "/tiny-f16.gguf";
  if (!std::filesystem::exists(path)) {
    auto shape = GetModelShape("tiny", 0);
    auto r = QuantRecipe::Parse("f16");
    EXPECT_TRUE(shape.ok() && r.ok());
    absl::Status s = GenerateModel(*shape, *r, GenerateOptions{}, path);
    EXPECT_TRUE(s.ok()) << s;
  }
  return path;
}

EngineOptions Options(const std::string& path) {
  EngineOptions o;
  o.model_path = path;
  o.model.threads = 1;
  o.max_tokens_per_step = 64;
  o.max_sequences = 4;
  return o;
}

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (salt * 131 + i * 37 + 5) % 1000;
  return p;
}

int64_t LayerSum(const RoutingStats& s, int layer) {
  const auto c = s.layer_counts(layer);
  return std::accumulate(c.begin(), c.end(), int64_t{0});
}

TEST(EngineMetricsTest, PhaseTimesOnOneRank) {
  using Clock = std::chrono::steady_clock;
  LocalCommunicator comm;
  auto engine = Engine::Create(Options(TinyModel()), &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;

  double wall = 0, phases = 0;
  std::vector<int32_t> next(3);
  for (int step = 0; step < 6; ++step) {
    EngineStep s;
    int64_t tokens = 0;
    for (int q = 0; q < 3; ++q) {
      if (step == 0)
        s.start.push_back(
            {.id = uint64_t(q), .sampling = SamplingParams::Greedy(), .capacity = 64});
      s.items.push_back(
          {.id = uint64_t(q),
           .tokens = step == 0 ? Prompt(4 + 5 * q, q) : std::vector<int32_t>{next[q]}});
      tokens += static_cast<int64_t>(s.items.back().tokens.size());
    }
    const auto t0 = Clock::now();
    auto r = e.Step(s);
    const double w = std::chrono::duration<double>(Clock::now() - t0).count();
    ASSERT_TRUE(r.ok()) << r.status();
    for (int q = 0; q < 3; ++q) next[q] = r->tokens[q];
    ASSERT_EQ(r->rank_times.size(), 1u);
    const StepPhaseTimes& t = r->rank_times[0];
    EXPECT_EQ(t.tokens, tokens) << "step " << step;
    for (double x : {t.attention_s, t.moe_compute_s, t.other_s}) EXPECT_GE(x, 0) << step;
    EXPECT_GT(t.attention_s, 0) << "step " << step;
    EXPECT_GT(t.moe_compute_s, 0) << "step " << step;
    // One rank: no all-to-all, so nothing is communication.
    EXPECT_EQ(t.dispatch_s, 0) << "step " << step;
    EXPECT_EQ(t.combine_s, 0) << "step " << step;
    EXPECT_LE(t.total_s(), w) << "step " << step;
    wall += w;
    phases += t.total_s();
  }
  // What the phases leave out (planning, encoding the step, the one-rank gather) is small.
  EXPECT_GT(phases, 0.8 * wall) << "phases " << phases << " s of " << wall << " s";

  // An empty step (no items) still reports one rank, with nothing in the model phases.
  auto empty = e.Step(EngineStep{});
  ASSERT_TRUE(empty.ok());
  ASSERT_EQ(empty->rank_times.size(), 1u);
  EXPECT_EQ(empty->rank_times[0].tokens, 0);
  EXPECT_TRUE(e.Shutdown().ok());
}

TEST(EngineMetricsTest, RoutingStatsCountEveryChoice) {
  LocalCommunicator comm;
  auto engine = Engine::Create(Options(TinyModel()), &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  const ModelConfig& c = e.config();
  const int n_moe = c.n_layer - c.n_dense_lead;
  ASSERT_GE(n_moe, 1);
  ASSERT_EQ(e.expert_placements().size(), static_cast<size_t>(n_moe));

  auto before = e.CollectRoutingStats();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->num_layers(), n_moe);
  EXPECT_EQ(before->num_experts(), c.n_expert);
  for (int l = 0; l < n_moe; ++l) EXPECT_EQ(LayerSum(*before, l), 0);

  EngineStep s;
  s.start.push_back({.id = 1, .sampling = SamplingParams::Greedy(), .capacity = 64});
  s.items.push_back({.id = 1, .tokens = Prompt(11, 1)});
  auto r = e.Step(s);
  ASSERT_TRUE(r.ok()) << r.status();
  EngineStep d;
  d.items.push_back({.id = 1, .tokens = {r->tokens[0]}});
  ASSERT_TRUE(e.Step(d).ok());

  auto stats = e.CollectRoutingStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  for (int l = 0; l < n_moe; ++l) {
    EXPECT_EQ(LayerSum(*stats, l), 12 * c.n_expert_used) << "MoE layer " << l;
    for (int64_t x : stats->layer_counts(l)) EXPECT_LE(x, 12);  // a token picks an expert once
  }
  // Collecting is not destructive, and the engine keeps stepping afterwards.
  auto again = e.CollectRoutingStats();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *stats);

  for (const char* ext : {".json", ".tsv"}) {
    const std::string path = Dir() + "/stats" + ext;
    ASSERT_TRUE(SaveEngineRoutingStats(e, path).ok());
    auto loaded = RoutingStats::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(*loaded, *stats) << ext;
  }
  auto report = LoadImbalanceReport(e);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_NE(report->find("contiguous"), std::string::npos) << *report;
  EXPECT_TRUE(e.Shutdown().ok());
  EXPECT_FALSE(e.CollectRoutingStats().ok());  // shut down
}

TEST(ExpertLoadTest, HandComputedLoads) {
  RoutingStats s(2, 4);
  // Layer 0: all on expert 0. Layer 1: even.
  s.Add(0, 0, 12);
  for (int x = 0; x < 4; ++x) s.Add(1, x, 5);
  auto contiguous = ExpertPlacement::Contiguous(4, 2);  // rank 0: {0, 1}, rank 1: {2, 3}
  ASSERT_TRUE(contiguous.ok());
  auto load = LayerLoadImbalance(s, std::span<const ExpertPlacement>(&*contiguous, 1));
  ASSERT_TRUE(load.ok()) << load.status();
  ASSERT_EQ(load->size(), 2u);
  EXPECT_EQ((*load)[0].rank_tokens, (std::vector<double>{12, 0}));
  EXPECT_DOUBLE_EQ((*load)[0].max_over_mean, 2.0);
  EXPECT_EQ((*load)[1].rank_tokens, (std::vector<double>{10, 10}));
  EXPECT_DOUBLE_EQ((*load)[1].max_over_mean, 1.0);
  const LoadSummary sum = SummarizeLoad(*load);
  EXPECT_EQ(sum.worst_layer, 0);
  EXPECT_DOUBLE_EQ(sum.worst_max_over_mean, 2.0);
  EXPECT_DOUBLE_EQ(sum.mean_max_over_mean, (12 * 2.0 + 20 * 1.0) / 32);

  // Expert 0 on both ranks: its 12 tokens split 6/6.
  auto replicated = ExpertPlacement::FromReplicaLists(2, {{0, 1}, {0}, {1}, {1}});
  ASSERT_TRUE(replicated.ok());
  load = LayerLoadImbalance(s, std::span<const ExpertPlacement>(&*replicated, 1));
  ASSERT_TRUE(load.ok());
  EXPECT_EQ((*load)[0].rank_tokens, (std::vector<double>{6, 6}));

  // Shapes that do not fit are errors, not garbage.
  std::vector<ExpertPlacement> three(3, *contiguous);
  EXPECT_FALSE(LayerLoadImbalance(s, three).ok());
  auto wrong = ExpertPlacement::Contiguous(8, 2);
  ASSERT_TRUE(wrong.ok());
  EXPECT_FALSE(LayerLoadImbalance(s, std::span<const ExpertPlacement>(&*wrong, 1)).ok());
  EXPECT_FALSE(LayerLoadImbalance(s, {}).ok());
}

// Skewed routing (a few hot experts at the start of the id range, as contiguous placement
// handles worst), saved as a file; "balanced:<file>" and "balanced+R:<file>" from it.
TEST(ExpertLoadTest, BalancedFromSkewedStatsBeatsContiguous) {
  const int kLayers = 3, kExperts = 16;
  RoutingStats s(kLayers, kExperts);
  for (int l = 0; l < kLayers; ++l) {
    for (int x = 0; x < kExperts; ++x) s.Add(l, x, x < 3 + l ? 400 / (x + 1) : 5 + x);
  }
  const std::string path = Dir() + "/skewed.json";
  ASSERT_TRUE(s.Save(path).ok());
  for (int ranks : {2, 3, 4}) {
    auto contiguous = PlacementsFromSpec("contiguous", kLayers, kExperts, ranks);
    auto balanced = PlacementsFromSpec("balanced:" + path, kLayers, kExperts, ranks);
    auto replicas = PlacementsFromSpec("balanced+4:" + path, kLayers, kExperts, ranks);
    ASSERT_TRUE(contiguous.ok() && balanced.ok()) << balanced.status();
    ASSERT_TRUE(replicas.ok()) << replicas.status();
    auto c = LayerLoadImbalance(s, *contiguous);
    auto b = LayerLoadImbalance(s, *balanced);
    auto r = LayerLoadImbalance(s, *replicas);
    ASSERT_TRUE(c.ok() && b.ok() && r.ok());
    for (int l = 0; l < kLayers; ++l) {
      EXPECT_LT((*b)[l].max_over_mean, (*c)[l].max_over_mean) << ranks << " ranks, layer " << l;
      EXPECT_EQ((*replicas)[l].total_copies(), kExperts + 4);
    }
    // From 3 ranks on, the hottest expert (0: 400 of ~900 tokens) alone exceeds a rank's fair
    // share, which no placement of single copies can fix; copies of it can.
    if (ranks >= 3) {
      EXPECT_LT(SummarizeLoad(*r).mean_max_over_mean, SummarizeLoad(*b).mean_max_over_mean)
          << ranks << " ranks";
    }
  }
  EXPECT_FALSE(PlacementsFromSpec("balanced+x:" + path, kLayers, kExperts, 2).ok());
  EXPECT_FALSE(PlacementsFromSpec("balanced+2", kLayers, kExperts, 2).ok());
  EXPECT_FALSE(PlacementsFromSpec("balanced:", kLayers, kExperts, 2).ok());
  EXPECT_FALSE(PlacementsFromSpec("balanced+99:" + path, kLayers, kExperts, 2).ok());
  EXPECT_FALSE(PlacementsFromSpec("balanced:" + path, kLayers + 1, kExperts, 2).ok());
}

}  // namespace
}  // namespace tritmoe
