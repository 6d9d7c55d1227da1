// The device expert exchange (runtime/gpu/device_expert_exchange.h) on one GPU, over a real NCCL
// communicator of one rank (the exchange with itself: every expert served here):
//  * GpuModel with the exchange attached against the resident path, on generated tiny and small
//    models, f16 and ud-1.58: logits BIT-IDENTICAL at every step (a prefill of two sequences, then
//    decode steps: the first eager, the next replayed from CUDA graphs that contain the NCCL
//    calls), greedy tokens identical, and a step with an empty batch (this rank without tokens:
//    every MoE layer's exchange with zero tokens) leaves the next steps bit-identical;
//  * the exchange's kernels against host twins on a two-rank placement with replicas: which
//    choices a rank serves, its partial sums, the origin's rank-order sum;
//  * attaching is refused where it cannot apply (host-staged exchange, other shapes).
// Skips without an sm_90 GPU.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "experts/cuda/device_buffer.h"
#include "gtest/gtest.h"
#include "runtime/gpu/device_expert_exchange.h"
#include "runtime/gpu/exchange_kernels.h"
#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/gpu_model.h"
#include "runtime/gpu/moe_route.h"
#include "runtime/gpu/nccl_communicator.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/modelgen/model_generator.h"
#include "runtime/modelgen/model_shape.h"
#include "runtime/modelgen/quant_recipe.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

using gpu::DeviceExchangeConfig;
using gpu::DeviceExchangeLayer;
using gpu::DeviceExpertExchange;
using gpu::GpuModel;
using gpu::GpuModelOptions;
using gpu::GpuSequenceInput;

std::string Model(const std::string& shape_name, const std::string& recipe) {
  static std::map<std::string, std::string>* paths = new std::map<std::string, std::string>();
  const std::string key = shape_name + "-" + recipe;
  if (auto it = paths->find(key); it != paths->end()) return it->second;
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("tritmoe_dex_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / (key + ".gguf")).string();
  auto shape = GetModelShape(shape_name, 0);
  auto rec = QuantRecipe::Parse(recipe);
  EXPECT_TRUE(shape.ok() && rec.ok());
  GenerateOptions o;
  o.threads = static_cast<int>(std::max(4u, std::thread::hardware_concurrency()));
  const absl::Status s = GenerateModel(*shape, *rec, o, path);
  EXPECT_TRUE(s.ok()) << s;
  (*paths)[key] = path;
  return path;
}

std::unique_ptr<GpuModel> Load(const std::string& path, ExpertExchange* host_exchange = nullptr) {
  GpuModelOptions o;
  o.kv_type = KvCacheType::kF32;
  o.max_context = 64;
  o.threads = 4;
  o.exchange = host_exchange;
  auto m = GpuModel::Load(path, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

// Every MoE layer of `c` with each expert on rank 0 only.
DeviceExchangeConfig OneRankConfig(const ModelConfig& c) {
  DeviceExchangeConfig x;
  x.n_expert = c.n_expert;
  x.k = c.n_expert_used;
  x.n_embd = c.n_embd;
  x.max_ff = c.n_ff_exp;
  for (int il = 0; il < c.n_layer; ++il) {
    if (!c.IsMoeLayer(il)) continue;
    DeviceExchangeLayer l;
    for (int e = 0; e <= c.n_expert; ++e) l.replica_offsets.push_back(e);
    l.replica_ranks.assign(c.n_expert, 0);
    x.layers.push_back(std::move(l));
  }
  return x;
}

const std::vector<int32_t> kPromptA = {1, 5, 42, 79, 116, 153, 190};
const std::vector<int32_t> kPromptB = {7, 300, 12, 999, 4};
const std::vector<std::vector<int32_t>> kDecode = {
    {11, 13}, {500, 2}, {64, 1000}, {3, 17}, {250, 9}};

// Logits of every step (prefill, then decode), an empty step after the first decode when asked,
// and greedy tokens of two more decode steps.
struct ScenarioResult {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> greedy;
};

ScenarioResult RunScenario(GpuModel& m, bool empty_step) {
  ScenarioResult run;
  auto a = m.NewKvCache(), b = m.NewKvCache();
  EXPECT_TRUE(a.ok() && b.ok());
  if (!a.ok() || !b.ok()) return run;
  StepOutput out;
  absl::Status s = m.Step(
      {{a->get(), kPromptA, LogitsRequest::kAll}, {b->get(), kPromptB, LogitsRequest::kLast}},
      &out);
  EXPECT_TRUE(s.ok()) << s;
  run.logits.push_back(out.logits);
  for (size_t i = 0; i < kDecode.size(); ++i) {
    const auto& d = kDecode[i];
    s = m.Step({{a->get(), {&d[0], 1}, LogitsRequest::kLast},
                {b->get(), {&d[1], 1}, LogitsRequest::kLast}},
               &out);
    EXPECT_TRUE(s.ok()) << s;
    run.logits.push_back(out.logits);
    if (i == 0 && empty_step) {
      StepOutput none;
      s = m.Step(std::span<const GpuSequenceInput>(), &none);
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_TRUE(none.logits.empty());
    }
  }
  std::vector<int32_t> tok = {kDecode.back()[0], kDecode.back()[1]};
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> next;
    const std::vector<GpuSequenceInput> batch = {{a->get(), {&tok[0], 1}, LogitsRequest::kLast},
                                                 {b->get(), {&tok[1], 1}, LogitsRequest::kLast}};
    s = m.StepGreedy(batch, &next);
    EXPECT_TRUE(s.ok()) << s;
    run.greedy.push_back(next);
    if (next.size() == 2) tok = next;
  }
  return run;
}

class DeviceExchangeModelTest
    : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

// The scenario on the resident path and with the exchange attached (with an empty step after the
// first decode step when `empty_step`): every logit bit-identical, the same greedy tokens.
void ExpectBitIdentical(const std::string& shape, const std::string& recipe, bool empty_step) {
  const std::string path = Model(shape, recipe);
  auto resident = Load(path);
  auto exchanged = Load(path);
  ASSERT_NE(resident, nullptr);
  ASSERT_NE(exchanged, nullptr);
  LocalCommunicator host;
  auto nccl = gpu::NcclCommunicator::Create(host, 0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  auto dex = DeviceExpertExchange::Create(OneRankConfig(exchanged->config()), &host, nccl->get());
  ASSERT_TRUE(dex.ok()) << dex.status();
  ASSERT_TRUE(exchanged->AttachDeviceExchange(dex->get()).ok());

  const ScenarioResult want = RunScenario(*resident, false);
  const ScenarioResult got = RunScenario(*exchanged, empty_step);
  ASSERT_EQ(got.logits.size(), want.logits.size());
  for (size_t s = 0; s < want.logits.size(); ++s) {
    ASSERT_EQ(got.logits[s].size(), want.logits[s].size()) << "step " << s;
    ASSERT_FALSE(want.logits[s].empty());
    size_t differ = 0;
    for (size_t i = 0; i < want.logits[s].size(); ++i) {
      if (std::memcmp(&got.logits[s][i], &want.logits[s][i], sizeof(float)) != 0) ++differ;
    }
    EXPECT_EQ(differ, 0u) << "step " << s << ": " << differ << " of " << want.logits[s].size()
                          << " logits differ in their bits";
  }
  EXPECT_EQ(got.greedy, want.greedy);
  std::printf("%s-%s: %zu steps bit-identical to the resident path\n", shape.c_str(),
              recipe.c_str(), want.logits.size());
  // Its CUDA graphs hold NCCL work: the model goes before the communicator (ncclCommDestroy
  // waits for such graphs, which would otherwise be destroyed after it: a hang).
  exchanged.reset();
}

TEST_P(DeviceExchangeModelTest, SelfExchangeIsBitIdenticalToResident) {
  TM_SKIP_WITHOUT_GPU();
  const auto& [shape, recipe] = GetParam();
  ExpectBitIdentical(shape, recipe, false);
}

// A step with an empty batch (this rank without tokens: every MoE layer's exchange with zero
// tokens) between decode steps changes nothing after it.
TEST_P(DeviceExchangeModelTest, EmptyStepChangesNothing) {
  TM_SKIP_WITHOUT_GPU();
  const auto& [shape, recipe] = GetParam();
  ExpectBitIdentical(shape, recipe, true);
}

INSTANTIATE_TEST_SUITE_P(Models, DeviceExchangeModelTest,
                         ::testing::Combine(::testing::Values("tiny", "small"),
                                            ::testing::Values("f16", "ud-1.58")),
                         [](const auto& info) {
                           std::string s = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (char& ch : s) {
                             if (ch == '-' || ch == '.') ch = '_';
                           }
                           return s;
                         });

TEST(DeviceExchangeTest, AttachIsRefusedWhereItCannotApply) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = Model("tiny", "ud-1.58");
  LocalCommunicator host;
  auto nccl = gpu::NcclCommunicator::Create(host, 0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  LocalExpertExchange local;
  auto staged = Load(path, &local);
  ASSERT_NE(staged, nullptr);
  DeviceExchangeConfig cfg = OneRankConfig(staged->config());
  auto dex = DeviceExpertExchange::Create(cfg, &host, nccl->get());
  ASSERT_TRUE(dex.ok()) << dex.status();
  EXPECT_EQ(staged->AttachDeviceExchange(dex->get()).code(), absl::StatusCode::kFailedPrecondition);
  auto plain = Load(path);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->AttachDeviceExchange(nullptr).ok());
  // A table for one MoE layer fewer, and one naming a rank outside the group.
  DeviceExchangeConfig fewer = cfg;
  fewer.layers.pop_back();
  auto dex2 = DeviceExpertExchange::Create(fewer, &host, nccl->get());
  ASSERT_TRUE(dex2.ok());
  const absl::Status s = plain->AttachDeviceExchange(dex2->get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  DeviceExchangeConfig bad = cfg;
  bad.layers[0].replica_ranks[0] = 1;
  EXPECT_EQ(DeviceExpertExchange::Create(bad, &host, nccl->get()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The kernels as rank 1 of 2: 7 tokens of k = 3 over 6 experts; expert e on rank e % 2, expert 5
// also on rank 0 (copies by token parity: rank 0 for even tokens, rank 1 for odd).
TEST(DeviceExchangeTest, KernelsMatchHostTwinsOnTwoRanks) {
  TM_SKIP_WITHOUT_GPU();
  const int T = 7, k = 3, E = 6, n = 40, rank = 1;
  std::vector<int32_t> offsets = {0, 1, 2, 3, 4, 5, 7}, ranks = {0, 1, 0, 1, 0, 1, 0};
  ranks[5] = 1;  // expert 5: ranks {1, 0}
  ranks[6] = 0;
  std::mt19937 rng(3);
  std::vector<int32_t> experts(T * k);
  for (int32_t& e : experts) e = static_cast<int32_t>(rng() % E);
  experts[4] = 5;  // token 1 (odd): copy 1 = rank 0; token 2 (even): copy 0 = rank 1
  experts[6] = 5;
  const std::vector<float> w = testing::RandomFloats(T * k, rng, 0.1f, 1.0f);
  auto up = [](const void* p, size_t bytes) {
    DeviceBuffer b(bytes);
    b.CopyFromHost(p, bytes);
    return b;
  };
  DeviceBuffer d_exp = up(experts.data(), experts.size() * 4), d_off = up(offsets.data(), 28),
               d_ranks = up(ranks.data(), ranks.size() * 4), d_w = up(w.data(), w.size() * 4);
  DeviceBuffer d_masked(T * k * 4), d_offsets((E + 2) * 4), d_pair_token(T * k * 4),
      d_slot_pair(T * k * 4);
  gpu::MaskChoicesParams mp;
  mp.experts = d_exp.as<int32_t>();
  mp.replica_offsets = d_off.as<int32_t>();
  mp.replica_ranks = d_ranks.as<int32_t>();
  mp.n_tokens = T;
  mp.k = k;
  mp.n_expert = E;
  mp.rank = rank;
  mp.masked = d_masked.as<int32_t>();
  ASSERT_EQ(gpu::LaunchMaskChoices(mp, nullptr), cudaSuccess);
  std::vector<int32_t> masked(T * k);
  d_masked.CopyToHost(masked.data(), masked.size() * 4);
  for (int i = 0; i < T * k; ++i) {
    const int e = experts[i], g = i / k;
    const int copies = offsets[e + 1] - offsets[e];
    const bool mine = ranks[offsets[e] + g % copies] == rank;
    EXPECT_EQ(masked[i], mine ? e : E) << "choice " << i;
  }
  EXPECT_EQ(masked[6], 5);  // token 2 (even) -> copy 0 = rank 1
  EXPECT_EQ(masked[4], E);  // token 1 (odd) -> copy 1 = rank 0
  gpu::GroupParams gp;
  gp.experts = d_masked.as<int32_t>();
  gp.n_tokens = T;
  gp.k = k;
  gp.n_expert = E + 1;
  gp.offsets = d_offsets.as<int32_t>();
  gp.pair_token = d_pair_token.as<int32_t>();
  gp.slot_pair = d_slot_pair.as<int32_t>();
  ASSERT_EQ(gpu::LaunchGroupByExpert(gp, nullptr), cudaSuccess);
  std::vector<int32_t> slot_pair(T * k);
  d_slot_pair.CopyToHost(slot_pair.data(), slot_pair.size() * 4);
  // Expert outputs: pair p's row, values that identify it.
  const std::vector<float> y = testing::RandomFloats(size_t(T) * k * n, rng);
  DeviceBuffer d_y = up(y.data(), y.size() * 4), d_partial(size_t(T) * n * 4);
  gpu::PartialCombineParams pc;
  pc.masked = d_masked.as<int32_t>();
  pc.slot_pair = d_slot_pair.as<int32_t>();
  pc.w = d_w.as<float>();
  pc.y = d_y.as<float>();
  pc.partial = d_partial.as<float>();
  pc.n_tokens = T;
  pc.k = k;
  pc.n = n;
  pc.n_expert = E;
  ASSERT_EQ(gpu::LaunchPartialCombine(pc, nullptr), cudaSuccess);
  std::vector<float> partial(size_t(T) * n);
  d_partial.CopyToHost(partial.data(), partial.size() * 4);
  for (int g = 0; g < T; ++g) {
    for (int c = 0; c < n; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < k; ++j) {
        const int i = g * k + j;
        if (masked[i] == E) continue;
        const float prod = w[i] * y[size_t(slot_pair[i]) * n + c];
        acc = acc + prod;
      }
      ASSERT_EQ(partial[size_t(g) * n + c], acc) << g << " " << c;
    }
  }
  // The origin's sum of 3 ranks' partials for its 2 tokens, + shared, + residual.
  const int parts = 3, mine = 2;
  const std::vector<float> p = testing::RandomFloats(size_t(parts) * mine * n, rng);
  const std::vector<float> sh = testing::RandomFloats(size_t(mine) * n, rng);
  std::vector<float> x = testing::RandomFloats(size_t(mine) * n, rng);
  DeviceBuffer d_p = up(p.data(), p.size() * 4), d_sh = up(sh.data(), sh.size() * 4),
               d_x = up(x.data(), x.size() * 4);
  gpu::RankSumParams rs;
  rs.x = d_x.as<float>();
  rs.parts = d_p.as<float>();
  rs.shared = d_sh.as<float>();
  rs.n_parts = parts;
  rs.n_tokens = mine;
  rs.n = n;
  ASSERT_EQ(gpu::LaunchRankSum(rs, nullptr), cudaSuccess);
  std::vector<float> got(x.size());
  d_x.CopyToHost(got.data(), got.size() * 4);
  for (size_t i = 0; i < x.size(); ++i) {
    float acc = p[i];
    for (int r = 1; r < parts; ++r) acc = acc + p[r * mine * n + i];
    acc = acc + sh[i];
    ASSERT_EQ(got[i], x[i] + acc) << i;
  }
}

}  // namespace
}  // namespace tritmoe
