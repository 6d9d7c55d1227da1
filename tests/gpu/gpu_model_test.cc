// The GPU forward pass end to end against the CPU model (its twin) on `tiny` models written by the
// model generator: a batch of two sequences (a 7-token prefill with logits at every position and
// a 5-token prefill), then three decode steps of both, with the same fixed tokens on both sides.
// Bounds on every step's logits (RelError = max |gpu - cpu| / max |cpu|):
//  * f16 model: the GPU's float kernels against the CPU's float path: RelError <= 1e-4 (float32
//    sums in other orders; in practice ~1e-6), the same argmax everywhere;
//  * ud-1.58 model: int8 activations on the GPU (one scale per 256 columns) against the float
//    path: the median row's RelError at most 1.5x (+0.01) that of the CPU's llama.cpp-style
//    quantized path (Q8_K / Q8_0) against the same float path, and at most 1 argmax in 8 rows
//    more mismatched (random 1.58-bit weights give near-tie logits that quantization noise
//    moves by several percent); GPU vs CPU quantized: median <= 0.15;
// plus: decode steps replayed from CUDA graphs give the same logits bit for bit as eager launches,
// StepGreedy returns the argmax of Step's logits, bad input fails before any work, and the
// expert-parallel hook (an ExpertExchange) matches the resident path on one GPU.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gpu/gpu_kv_cache.h"
#include "runtime/gpu/gpu_model.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/model.h"
#include "runtime/modelgen/model_generator.h"
#include "runtime/modelgen/model_shape.h"
#include "runtime/modelgen/quant_recipe.h"
#include "tests/common/logits_compare.h"
#include "tests/gpu/gpu_test_util.h"

namespace tritmoe {
namespace {

using gpu::GpuKvCache;
using gpu::GpuModel;
using gpu::GpuModelOptions;
using gpu::GpuSequenceInput;
using testing::Agreement;
using testing::Argmax;

// A tiny model of `recipe`, generated once per process.
std::string TinyModel(const std::string& recipe) {
  static std::map<std::string, std::string>* paths = new std::map<std::string, std::string>();
  if (auto it = paths->find(recipe); it != paths->end()) return it->second;
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    ("tritmoe_gpu_model_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / ("tiny-" + recipe + ".gguf")).string();
  auto shape = GetModelShape("tiny", 0);
  auto rec = QuantRecipe::Parse(recipe);
  EXPECT_TRUE(shape.ok() && rec.ok());
  GenerateOptions o;
  o.threads = 2;
  const absl::Status s = GenerateModel(*shape, *rec, o, path);
  EXPECT_TRUE(s.ok()) << s;
  (*paths)[recipe] = path;
  return path;
}

const std::vector<int32_t> kPromptA = {1, 5, 42, 79, 116, 153, 190};
const std::vector<int32_t> kPromptB = {7, 300, 12, 999, 4};
const std::vector<std::vector<int32_t>> kDecode = {{11, 13}, {500, 2}, {64, 1000}};

// Logits of every step of the scenario: step 0 = the prefills (7 rows of A, then B's last row),
// steps 1..3 = one row per sequence.
std::vector<std::vector<float>> RunCpu(const std::string& path, ActPrecision prec, KvCacheType kv) {
  ModelOptions o;
  o.threads = 2;
  o.precision = prec;
  o.kv_type = kv;
  o.attention = AttentionForm::kAbsorbed;
  o.max_context = 64;
  auto m = Model::Load(path, o);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  auto a = (*m)->NewKvCache(), b = (*m)->NewKvCache();
  std::vector<std::vector<float>> steps;
  StepOutput out;
  EXPECT_TRUE((*m)->Step({{a->get(), kPromptA, LogitsRequest::kAll},
                          {b->get(), kPromptB, LogitsRequest::kLast}},
                         &out)
                  .ok());
  steps.push_back(out.logits);
  for (const auto& d : kDecode) {
    EXPECT_TRUE((*m)->Step({{a->get(), {&d[0], 1}, LogitsRequest::kLast},
                            {b->get(), {&d[1], 1}, LogitsRequest::kLast}},
                           &out)
                    .ok());
    steps.push_back(out.logits);
  }
  return steps;
}

std::vector<std::vector<float>> RunGpu(GpuModel& m) {
  auto a = m.NewKvCache(), b = m.NewKvCache();
  EXPECT_TRUE(a.ok() && b.ok());
  std::vector<std::vector<float>> steps;
  StepOutput out;
  absl::Status s = m.Step(
      {{a->get(), kPromptA, LogitsRequest::kAll}, {b->get(), kPromptB, LogitsRequest::kLast}},
      &out);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(out.first_row, (std::vector<int64_t>{0, 7}));
  EXPECT_EQ(out.n_rows, (std::vector<int64_t>{7, 1}));
  steps.push_back(out.logits);
  for (const auto& d : kDecode) {
    s = m.Step({{a->get(), {&d[0], 1}, LogitsRequest::kLast},
                {b->get(), {&d[1], 1}, LogitsRequest::kLast}},
               &out);
    EXPECT_TRUE(s.ok()) << s;
    steps.push_back(out.logits);
  }
  EXPECT_EQ((*a)->size(), 10);
  EXPECT_EQ((*b)->size(), 8);
  return steps;
}

std::unique_ptr<GpuModel> LoadGpu(const std::string& path, KvCacheType kv, bool graphs,
                                  bool fuse = true) {
  GpuModelOptions o;
  o.fuse_small_ops = fuse;
  o.kv_type = kv;
  o.max_context = 64;
  o.threads = 2;
  o.cuda_graphs = graphs;
  auto m = GpuModel::Load(path, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

Agreement Compare(const std::vector<std::vector<float>>& gpu,
                  const std::vector<std::vector<float>>& cpu, int64_t n_vocab) {
  Agreement a;
  EXPECT_EQ(gpu.size(), cpu.size());
  for (size_t s = 0; s < std::min(gpu.size(), cpu.size()); ++s) {
    EXPECT_EQ(gpu[s].size(), cpu[s].size()) << "step " << s;
    if (gpu[s].size() != cpu[s].size()) continue;
    for (size_t r = 0; r * n_vocab < cpu[s].size(); ++r) {
      a.AddRow(gpu[s].data() + r * n_vocab, cpu[s].data() + r * n_vocab, n_vocab);
    }
  }
  return a;
}

TEST(GpuModelTest, F16MatchesCpuFloatPath) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = TinyModel("f16");
  for (KvCacheType kv : {KvCacheType::kF32, KvCacheType::kF16}) {
    SCOPED_TRACE(std::string(KvCacheTypeName(kv)));
    auto g = LoadGpu(path, kv, true);
    ASSERT_NE(g, nullptr);
    const auto cpu = RunCpu(path, ActPrecision::kFloat, kv);
    const auto gpu = RunGpu(*g);
    const Agreement a = Compare(gpu, cpu, g->n_vocab());
    std::printf("f16 model, %s cache: %zu rows, max RelError %.3g, argmax mismatches %d\n",
                std::string(KvCacheTypeName(kv)).c_str(), a.row_err.size(), a.Max(),
                a.argmax_mismatch);
    EXPECT_LE(a.Max(), 1e-4);
    EXPECT_EQ(a.argmax_mismatch, 0);
  }
}

TEST(GpuModelTest, Ud158IsAsCloseToFloatAsTheCpuQuantizedPath) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = TinyModel("ud-1.58");
  for (KvCacheType kv : {KvCacheType::kF16, KvCacheType::kQ8_0, KvCacheType::kQ4_0}) {
    SCOPED_TRACE(std::string(KvCacheTypeName(kv)));
    auto g = LoadGpu(path, kv, true);
    ASSERT_NE(g, nullptr);
    const auto gpu = RunGpu(*g);
    const auto cpu_q = RunCpu(path, ActPrecision::kQuantized, kv);
    const auto cpu_f = RunCpu(path, ActPrecision::kFloat, kv);
    const Agreement q = Compare(gpu, cpu_q, g->n_vocab());
    const Agreement f = Compare(gpu, cpu_f, g->n_vocab());
    const Agreement cf = Compare(cpu_q, cpu_f, g->n_vocab());
    std::printf(
        "ud-1.58 model, %s cache, %zu rows (median / max RelError, argmax mismatches): GPU vs "
        "CPU quantized %.3g / %.3g, %d; GPU vs CPU float %.3g / %.3g, %d; CPU quantized vs CPU "
        "float %.3g / %.3g, %d\n",
        std::string(KvCacheTypeName(kv)).c_str(), q.row_err.size(), q.Median(), q.Max(),
        q.argmax_mismatch, f.Median(), f.Max(), f.argmax_mismatch, cf.Median(), cf.Max(),
        cf.argmax_mismatch);
    // Random 1.58-bit weights make the logits near-ties, so quantizing activations (per 256
    // columns on the GPU, Q8_K/Q8_0 on the CPU) moves them by several percent; the GPU must stay
    // as close to the float reference as the CPU's quantized path is.
    EXPECT_LE(f.Median(), 1.5 * cf.Median() + 0.01);
    EXPECT_LE(f.argmax_mismatch, cf.argmax_mismatch + static_cast<int>(f.row_err.size() / 8));
    EXPECT_LE(q.Median(), 0.15);
  }
}

TEST(GpuModelTest, GraphReplaysEqualEagerLaunches) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = TinyModel("ud-1.58");
  auto eager = LoadGpu(path, KvCacheType::kF16, false);
  auto graphs = LoadGpu(path, KvCacheType::kF16, true);
  ASSERT_NE(eager, nullptr);
  ASSERT_NE(graphs, nullptr);
  EXPECT_EQ(RunGpu(*graphs), RunGpu(*eager));
}

// The fused small ops (norm + quantize, residual + norm, SwiGLU + quantize, route + group) do the
// same float operations as the separate kernels: bit-identical logits, prefill and decode.
TEST(GpuModelTest, FusedSmallOpsEqualSeparateKernels) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = TinyModel("ud-1.58");
  auto fused = LoadGpu(path, KvCacheType::kF16, true, true);
  auto separate = LoadGpu(path, KvCacheType::kF16, true, false);
  ASSERT_NE(fused, nullptr);
  ASSERT_NE(separate, nullptr);
  EXPECT_EQ(RunGpu(*fused), RunGpu(*separate));
}

TEST(GpuModelTest, GreedyStepReturnsTheArgmax) {
  TM_SKIP_WITHOUT_GPU();
  auto g = LoadGpu(TinyModel("ud-1.58"), KvCacheType::kF16, true);
  ASSERT_NE(g, nullptr);
  auto a = g->NewKvCache(32), b = g->NewKvCache(32);
  ASSERT_TRUE(a.ok() && b.ok());
  StepOutput out;
  ASSERT_TRUE(g->Step({{a->get(), kPromptA, LogitsRequest::kLast},
                       {b->get(), kPromptA, LogitsRequest::kLast}},
                      &out)
                  .ok());
  // Both sequences hold the same history; a's next step through Step, b's through StepGreedy.
  int32_t next = static_cast<int32_t>(Argmax(out.Row(0, 0), out.n_vocab));
  for (int step = 0; step < 4; ++step) {
    ASSERT_TRUE(g->Step({{a->get(), {&next, 1}, LogitsRequest::kLast}}, &out).ok());
    std::vector<int32_t> greedy;
    const GpuSequenceInput in[1] = {{b->get(), {&next, 1}, LogitsRequest::kLast}};
    ASSERT_TRUE(g->StepGreedy(in, &greedy).ok());
    ASSERT_EQ(greedy.size(), 1u);
    const int32_t want = static_cast<int32_t>(Argmax(out.Row(0, 0), out.n_vocab));
    EXPECT_EQ(greedy[0], want) << "step " << step;
    next = want;
  }
}

// argmax_exclude (EOS under ignore_eos): the best other token, as the host Sampler with that
// token masked; -1 excludes nothing; out of range is rejected.
TEST(GpuModelTest, GreedyStepSkipsTheExcludedToken) {
  TM_SKIP_WITHOUT_GPU();
  auto g = LoadGpu(TinyModel("ud-1.58"), KvCacheType::kF16, true);
  ASSERT_NE(g, nullptr);
  auto a = g->NewKvCache(32), b = g->NewKvCache(32), c = g->NewKvCache(32);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  StepOutput out;
  ASSERT_TRUE(g->Step({{a->get(), kPromptA, LogitsRequest::kLast}}, &out).ok());
  std::vector<float> row(out.Row(0, 0), out.Row(0, 0) + out.n_vocab);
  const int32_t best = static_cast<int32_t>(Argmax(row.data(), out.n_vocab));
  row[best] = -INFINITY;
  const int32_t second = static_cast<int32_t>(Argmax(row.data(), out.n_vocab));
  ASSERT_NE(best, second);
  std::vector<int32_t> next;
  GpuSequenceInput bad[1] = {{b->get(), kPromptA, LogitsRequest::kLast}};
  bad[0].argmax_exclude = static_cast<int32_t>(g->n_vocab());
  const absl::Status s = g->StepGreedy(bad, &next);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ((*b)->size(), 0);
  GpuSequenceInput in[2] = {{b->get(), kPromptA, LogitsRequest::kLast},
                            {c->get(), kPromptA, LogitsRequest::kLast}};
  in[0].argmax_exclude = best;
  in[1].argmax_exclude = -1;
  ASSERT_TRUE(g->StepGreedy(in, &next).ok());
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0], second);
  EXPECT_EQ(next[1], best);
  // A sequence without a logits row (a prefill chunk) gets -1; the others their argmax.
  auto d = g->NewKvCache(32), e = g->NewKvCache(32);
  ASSERT_TRUE(d.ok() && e.ok());
  const GpuSequenceInput mixed[2] = {{d->get(), kPromptA, LogitsRequest::kNone},
                                     {e->get(), kPromptA, LogitsRequest::kLast}};
  ASSERT_TRUE(g->StepGreedy(mixed, &next).ok());
  EXPECT_EQ(next, (std::vector<int32_t>{-1, best}));
  EXPECT_EQ((*d)->size(), static_cast<int64_t>(kPromptA.size()));
}

TEST(GpuModelTest, BadInputFailsBeforeAnyWork) {
  TM_SKIP_WITHOUT_GPU();
  auto g = LoadGpu(TinyModel("ud-1.58"), KvCacheType::kF16, true);
  ASSERT_NE(g, nullptr);
  auto a = g->NewKvCache(8);
  ASSERT_TRUE(a.ok());
  StepOutput out;
  const std::vector<int32_t> bad = {1, 2, static_cast<int32_t>(g->n_vocab())};
  absl::Status s = g->Step({{a->get(), bad, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s;
  EXPECT_EQ((*a)->size(), 0);
  const std::vector<int32_t> nine(9, 1);
  s = g->Step({{a->get(), nine, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  s = g->Step({{a->get(), {}, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::vector<int32_t> one = {1};
  s = g->Step({{a->get(), one, LogitsRequest::kLast}, {a->get(), one, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(g->NewKvCache(65).ok());
  // The model still works after the rejected steps.
  const std::vector<int32_t> ok = {1, 2, 3};
  EXPECT_TRUE(g->Step({{a->get(), ok, LogitsRequest::kLast}}, &out).ok());
  EXPECT_EQ((*a)->size(), 3);
}

// The expert-parallel hook (GpuModelOptions::exchange) on one GPU: a LocalExpertExchange (every
// expert local) behind a counter. The MoE layers then go through the host (routing and h down,
// Dispatch, the grouped GEMVs over the dispatched rows, Combine, the weighted sum up): the same
// logits as the resident path, bit for bit (the same kernels on the same rows, and the host's sum
// in the combine kernel's order); an empty batch runs only
// the exchange, once per MoE layer in layer order, with zero tokens; rows dispatched to an expert
// outside local_experts fail the step.
class CountingExchange final : public ExpertExchange {
 public:
  absl::Status Dispatch(int layer, const float* hidden, int64_t n_embd, const Routing& routing,
                        ExpertBatch* batch) override {
    layers.push_back(layer);
    tokens.push_back(routing.n_tokens);
    return local.Dispatch(layer, hidden, n_embd, routing, batch);
  }
  absl::Status Combine(const ExpertBatch& batch, const Routing& routing, float* y) override {
    ++combines;
    return local.Combine(batch, routing, y);
  }
  LocalExpertExchange local;
  std::vector<int> layers;
  std::vector<int64_t> tokens;
  int combines = 0;
};

std::unique_ptr<GpuModel> LoadGpuWithExchange(const std::string& path, ExpertExchange* exchange,
                                              std::vector<bool> local_experts = {},
                                              int64_t expert_cache_bytes = 0) {
  GpuModelOptions o;
  o.expert_cache_bytes = expert_cache_bytes;
  o.kv_type = KvCacheType::kF32;
  o.max_context = 64;
  o.threads = 2;
  o.exchange = exchange;
  o.local_experts = std::move(local_experts);
  auto m = GpuModel::Load(path, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

TEST(GpuModelTest, ExchangePathMatchesResidentExperts) {
  TM_SKIP_WITHOUT_GPU();
  for (const std::string recipe : {"f16", "ud-1.58"}) {
    SCOPED_TRACE(recipe);
    const std::string path = TinyModel(recipe);
    auto resident = LoadGpu(path, KvCacheType::kF32, true);
    CountingExchange ex;
    auto hooked = LoadGpuWithExchange(path, &ex);
    ASSERT_NE(resident, nullptr);
    ASSERT_NE(hooked, nullptr);
    const ModelConfig& c = hooked->config();
    std::vector<int> moe_layers;
    for (int il = 0; il < c.n_layer; ++il) {
      if (c.IsMoeLayer(il)) moe_layers.push_back(il);
    }
    ASSERT_FALSE(moe_layers.empty());
    const auto want = RunGpu(*resident);
    const auto got = RunGpu(*hooked);
    // 1 prefill + 3 decode steps, each through every MoE layer once.
    EXPECT_EQ(ex.layers.size(), 4 * moe_layers.size());
    EXPECT_EQ(ex.combines, static_cast<int>(ex.layers.size()));
    const Agreement a = Compare(got, want, hooked->n_vocab());
    std::printf(
        "%s: exchange path vs resident: %zu rows, median / max RelError %.3g / %.3g, "
        "argmax mismatches %d\n",
        recipe.c_str(), a.row_err.size(), a.Median(), a.Max(), a.argmax_mismatch);
    // Bit for bit: LocalExpertExchange::Combine sums the slots in order from 0.0f with separate
    // multiplies and adds, as the combine kernel does (__fmul_rn / __fadd_rn), and the k = 1
    // pass adds 1.0f * y to 0.0f (measured on an H200: 0 / 0 for both recipes).
    EXPECT_EQ(got, want);

    // An empty batch: the exchange only, zero tokens, every MoE layer in order.
    ex.layers.clear();
    ex.tokens.clear();
    ex.combines = 0;
    StepOutput out;
    const absl::Status empty = hooked->Step(std::span<const GpuSequenceInput>(), &out);
    EXPECT_TRUE(empty.ok()) << empty;
    EXPECT_EQ(ex.layers, moe_layers);
    EXPECT_EQ(ex.tokens, std::vector<int64_t>(moe_layers.size(), 0));
    EXPECT_EQ(ex.combines, static_cast<int>(moe_layers.size()));
    EXPECT_TRUE(out.logits.empty());
    std::vector<int32_t> next = {7};
    EXPECT_TRUE(hooked->StepGreedy(std::span<const GpuSequenceInput>(), &next).ok());
    EXPECT_TRUE(next.empty());
    // Without an exchange an empty batch is still an error.
    EXPECT_FALSE(resident->Step(std::span<const GpuSequenceInput>(), &out).ok());
  }
}

// The exchange path through a GPU expert cache of one slot per MoE layer (every layer in rounds
// of one expert, experts copied in and evicted each step): bit-identical to the exchange path
// with every expert resident, and the cache saw misses. Prefetch is refused with an exchange.
TEST(GpuModelTest, ExchangePathThroughAnExpertCacheIsBitIdentical) {
  TM_SKIP_WITHOUT_GPU();
  {  // The cache takes the int8 tile types (ud-1.58's experts), not F16.
    const std::string path = TinyModel("ud-1.58");
    CountingExchange ex_resident, ex_cached;
    auto resident = LoadGpuWithExchange(path, &ex_resident);
    auto cached = LoadGpuWithExchange(path, &ex_cached, {}, /*expert_cache_bytes=*/1);
    ASSERT_NE(resident, nullptr);
    ASSERT_NE(cached, nullptr);
    const auto want = RunGpu(*resident);
    const auto got = RunGpu(*cached);
    EXPECT_EQ(got, want);
    const std::optional<ExpertCacheStats> stats = cached->expert_cache_stats();
    ASSERT_TRUE(stats.has_value());
    EXPECT_EQ(stats->slots_per_layer, 1);
    EXPECT_GT(stats->Total().misses, 0);
    // An empty batch (exchange only) through the cache.
    StepOutput out;
    EXPECT_TRUE(cached->Step(std::span<const GpuSequenceInput>(), &out).ok());
  }
  GpuModelOptions o;
  LocalExpertExchange ex;
  o.exchange = &ex;
  o.expert_cache_bytes = 1;
  o.expert_prefetch = true;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kUnimplemented);
}

TEST(GpuModelTest, ExchangeRowsForANonLocalExpertFailTheStep) {
  TM_SKIP_WITHOUT_GPU();
  const std::string path = TinyModel("ud-1.58");
  CountingExchange ex;
  auto probe = LoadGpuWithExchange(path, &ex);
  ASSERT_NE(probe, nullptr);
  std::vector<bool> only_first(probe->config().n_expert, false);
  only_first[0] = true;
  probe.reset();
  auto g = LoadGpuWithExchange(path, &ex, only_first);
  ASSERT_NE(g, nullptr);
  auto a = g->NewKvCache(16);
  ASSERT_TRUE(a.ok());
  StepOutput out;
  const absl::Status s = g->Step({{a->get(), kPromptA, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("does not hold it"), std::string::npos) << s;
  // local_experts of the wrong length, or without an exchange, are rejected at load.
  GpuModelOptions o;
  o.local_experts = {true};
  EXPECT_FALSE(GpuModel::Load(path, o).ok());
  o.exchange = &ex;
  EXPECT_FALSE(GpuModel::Load(path, o).ok());
}

TEST(GpuModelTest, LoadWithoutGpuOrFileFailsCleanly) {
  GpuModelOptions o;
  auto m = GpuModel::Load("/nonexistent/model.gguf", o);
  EXPECT_FALSE(m.ok());
}

}  // namespace
}  // namespace tritmoe
