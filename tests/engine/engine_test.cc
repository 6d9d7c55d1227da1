// The Engine on one rank (LocalCommunicator) against the model it wraps: logits and greedy
// tokens equal Model::Step's, batching sequences changes nothing, bad steps are rejected without
// harming the engine; plus the step codec, the EP exchange against LocalExpertExchange, and the
// per-rank weight accounting. Multi-rank behaviour is tested under mpirun (ep_*_test).
#include "runtime/engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "gtest/gtest.h"
#include "runtime/engine/ep_expert_exchange.h"
#include "runtime/engine/placement_spec.h"
#include "runtime/engine/rank_weights.h"
#include "runtime/engine/step_codec.h"
#include "runtime/modelgen/model_generator.h"

namespace tritmoe {
namespace {

const std::vector<int32_t> kPrompt = {1, 5, 9, 300, 77, 12, 1000, 3, 500, 42};

std::string TinyModel(const std::string& recipe) {
  static std::string dir = [] {
    auto d = std::filesystem::path(::testing::TempDir()) /
             ("tritmoe_engine_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  const std::string path = dir + "/tiny-" + recipe + ".gguf";
  if (!std::filesystem::exists(path)) {
    auto shape = GetModelShape("tiny", 0);
    auto r = QuantRecipe::Parse(recipe);
    EXPECT_TRUE(shape.ok() && r.ok());
    absl::Status s = GenerateModel(*shape, *r, GenerateOptions{}, path);
    EXPECT_TRUE(s.ok()) << s;
  }
  return path;
}

double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || b.empty()) return 1e30;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

EngineOptions Options(const std::string& path) {
  EngineOptions o;
  o.model_path = path;
  o.model.threads = 1;
  o.max_tokens_per_step = 64;
  o.max_sequences = 4;
  return o;
}

std::unique_ptr<Model> LoadModel(const std::string& path) {
  ModelOptions mo;
  mo.threads = 1;
  auto m = Model::Load(path, mo);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

class EngineLocalTest : public ::testing::TestWithParam<std::string> {};

// Prefill logits at every position, then greedy decode: the same as driving Model::Step directly
// (up to the exchange's float summation order).
TEST_P(EngineLocalTest, MatchesModelStep) {
  const std::string path = TinyModel(GetParam());
  LocalCommunicator comm;
  auto engine = Engine::Create(Options(path), &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  EXPECT_TRUE(e.is_driver());
  EXPECT_EQ(e.num_ranks(), 1);
  const int64_t V = e.config().n_vocab;

  auto model = LoadModel(path);
  ASSERT_NE(model, nullptr);
  auto cache = model->NewKvCache(64);
  ASSERT_TRUE(cache.ok());
  StepOutput ref;
  ASSERT_TRUE(model->Step({{cache->get(), kPrompt, LogitsRequest::kAll}}, &ref).ok());

  EngineStep step;
  step.start.push_back({.id = 7, .sampling = SamplingParams::Greedy(), .capacity = 64});
  step.items.push_back({.id = 7, .tokens = kPrompt, .sample = true, .logits = LogitsRequest::kAll});
  auto r = e.Step(step);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->logits.size(), 1u);
  EXPECT_LT(RelError(r->logits[0], ref.logits), 1e-5);
  int32_t next = r->tokens[0];
  EXPECT_EQ(next, Argmax(ref.Row(0, kPrompt.size() - 1), V));

  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(model->Step({{cache->get(), {&next, 1}, LogitsRequest::kLast}}, &ref).ok());
    EngineStep d;
    d.items.push_back({.id = 7, .tokens = {next}, .sample = true, .logits = LogitsRequest::kLast});
    auto dr = e.Step(d);
    ASSERT_TRUE(dr.ok()) << dr.status();
    EXPECT_LT(RelError(dr->logits[0], ref.logits), 1e-5) << "decode step " << i;
    EXPECT_EQ(dr->tokens[0], Argmax(ref.Row(0, 0), V)) << "decode step " << i;
    next = dr->tokens[0];
  }
  EngineStep rel;
  rel.release.push_back(7);
  EXPECT_TRUE(e.Step(rel).ok());
  EXPECT_TRUE(e.Shutdown().ok());
}

INSTANTIATE_TEST_SUITE_P(Recipes, EngineLocalTest, ::testing::Values("f16", "ud-1.58"));

// Sequences batched in one step give what each gives alone; a chunked prefill (no logits, no
// sample) followed by the rest gives the same next token as the whole prompt at once.
TEST(EngineTest, BatchedSequencesMatchAlone) {
  const std::string path = TinyModel("f16");
  LocalCommunicator comm;
  // Float activations: the quantized kernels may round a row differently in a larger batch.
  EngineOptions o = Options(path);
  o.model.precision = ActPrecision::kFloat;
  o.model.kv_type = KvCacheType::kF32;
  auto engine = Engine::Create(o, &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  const std::vector<int32_t> a = {3, 4, 5, 6, 7}, b = {900, 800, 700};

  auto alone = [&](uint64_t id, const std::vector<int32_t>& t) {
    EngineStep s;
    s.start.push_back({.id = id, .sampling = SamplingParams::Greedy(), .capacity = 16});
    s.items.push_back({.id = id, .tokens = t, .sample = true, .logits = LogitsRequest::kLast});
    s.release.push_back(id);
    auto r = e.Step(s);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  };
  EngineStepResult ra = alone(1, a), rb = alone(2, b);

  EngineStep s;
  s.start.push_back({.id = 10, .sampling = SamplingParams::Greedy(), .capacity = 16});
  s.start.push_back({.id = 11, .sampling = SamplingParams::Greedy(), .capacity = 16});
  s.items.push_back({.id = 10, .tokens = a, .sample = true, .logits = LogitsRequest::kLast});
  s.items.push_back({.id = 11, .tokens = b, .sample = true, .logits = LogitsRequest::kLast});
  auto both = e.Step(s);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->tokens[0], ra.tokens[0]);
  EXPECT_EQ(both->tokens[1], rb.tokens[0]);
  EXPECT_LT(RelError(both->logits[0], ra.logits[0]), 1e-5);
  EXPECT_LT(RelError(both->logits[1], rb.logits[0]), 1e-5);

  EngineStep c1;
  c1.start.push_back({.id = 20, .sampling = SamplingParams::Greedy(), .capacity = 16});
  c1.items.push_back({.id = 20, .tokens = {a.begin(), a.begin() + 2}, .sample = false});
  auto r1 = e.Step(c1);
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r1->tokens[0], -1);
  EXPECT_TRUE(r1->logits[0].empty());
  EngineStep c2;
  c2.items.push_back({.id = 20, .tokens = {a.begin() + 2, a.end()}, .sample = true});
  auto r2 = e.Step(c2);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->tokens[0], ra.tokens[0]);
  EXPECT_TRUE(e.Shutdown().ok());
}

// Seeded sampling is reproducible per sequence, whatever else runs in the step.
TEST(EngineTest, SamplingIsPerSequence) {
  const std::string path = TinyModel("ud-1.58");
  LocalCommunicator comm;
  auto engine = Engine::Create(Options(path), &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 99;
  auto run = [&](uint64_t id, bool with_neighbour) {
    std::vector<int32_t> out;
    EngineStep s;
    s.start.push_back({.id = id, .sampling = p, .capacity = 32});
    s.items.push_back({.id = id, .tokens = kPrompt, .sample = true});
    if (with_neighbour) {
      s.start.push_back({.id = id + 1, .sampling = SamplingParams::Greedy(), .capacity = 32});
      s.items.push_back({.id = id + 1, .tokens = {1, 2, 3}, .sample = true});
      s.release.push_back(id + 1);
    }
    for (int i = 0; i < 6; ++i) {
      auto r = e.Step(s);
      EXPECT_TRUE(r.ok()) << r.status();
      out.push_back(r->tokens[0]);
      s = EngineStep{};
      s.items.push_back({.id = id, .tokens = {out.back()}, .sample = true});
    }
    EngineStep rel;
    rel.release.push_back(id);
    EXPECT_TRUE(e.Step(rel).ok());
    return out;
  };
  EXPECT_EQ(run(100, false), run(200, true));
  EXPECT_TRUE(e.Shutdown().ok());
}

// Every bad step is refused before it runs, naming the sequence, and the engine carries on.
TEST(EngineTest, BadStepsAreRejectedAndEngineStaysUsable) {
  const std::string path = TinyModel("ud-1.58");
  LocalCommunicator comm;
  auto engine = Engine::Create(Options(path), &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  EngineStep ok;
  ok.start.push_back({.id = 1, .sampling = SamplingParams::Greedy(), .capacity = 8});
  ok.items.push_back({.id = 1, .tokens = {1, 2, 3}});
  ASSERT_TRUE(e.Step(ok).ok());

  auto expect_bad = [&](EngineStep s, const std::string& needle) {
    auto r = e.Step(s);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
  };
  EngineStep s;
  s.items.push_back({.id = 5, .tokens = {1}});
  expect_bad(s, "unknown sequence id 5");
  s = {};
  s.start.push_back({.id = 1, .sampling = SamplingParams::Greedy()});
  expect_bad(s, "sequence id 1 is already live");
  s = {};
  s.items.push_back({.id = 1, .tokens = {1}});
  s.items.push_back({.id = 1, .tokens = {2}});
  expect_bad(s, "sequence id 1 appears twice");
  s = {};
  s.items.push_back({.id = 1, .tokens = {1, 2, 3, 4, 5, 6}});
  expect_bad(s, "sequence id 1 is out of room");
  s = {};
  s.items.push_back({.id = 1, .tokens = {}});
  expect_bad(s, "sequence id 1 has no new tokens");
  s = {};
  s.items.push_back({.id = 1, .tokens = {1, 99999}});
  expect_bad(s, "token id 99999 at index 1");
  s = {};
  SamplingParams bad;
  bad.temperature = -1;
  s.start.push_back({.id = 2, .sampling = bad});
  expect_bad(s, "sequence id 2");
  s = {};
  s.start.push_back({.id = 3, .sampling = SamplingParams::Greedy(), .capacity = 1 << 30});
  expect_bad(s, "sequence id 3: capacity");
  s = {};
  s.start.push_back({.id = 4, .sampling = SamplingParams::Greedy(), .capacity = 128});
  s.items.push_back({.id = 4, .tokens = std::vector<int32_t>(65, 1)});
  expect_bad(s, "max_tokens_per_step");
  s = {};
  for (uint64_t id = 10; id < 14; ++id) {
    s.start.push_back({.id = id, .sampling = SamplingParams::Greedy(), .capacity = 4});
  }
  expect_bad(s, "max_sequences");
  s = {};
  s.release.push_back(77);
  expect_bad(s, "release of unknown sequence id 77");

  // Still usable, and none of the refused steps changed sequence 1 (5 more tokens still fit).
  EngineStep more;
  more.items.push_back({.id = 1, .tokens = {4, 5, 6, 7, 8}});
  more.release.push_back(1);
  EXPECT_TRUE(e.Step(more).ok());
  EXPECT_TRUE(e.Shutdown().ok());
  EXPECT_TRUE(e.Shutdown().ok());  // idempotent
  EXPECT_EQ(e.Step(ok).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(e.RunWorker().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(EngineTest, StartFailuresAreReported) {
  LocalCommunicator comm;
  EngineOptions o = Options("/nonexistent/model.gguf");
  auto r = Engine::Create(o, &comm);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsAgreedFailure(r.status()));
  EXPECT_NE(r.status().message().find("/nonexistent/model.gguf"), std::string::npos) << r.status();
  o = Options(TinyModel("ud-1.58"));
  o.max_tokens_per_step = 0;
  r = Engine::Create(o, &comm);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("max_tokens_per_step"), std::string::npos) << r.status();
  o = Options(TinyModel("ud-1.58"));
  o.placement = "/nonexistent/placement.json";
  r = Engine::Create(o, &comm);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("placement.json"), std::string::npos) << r.status();
}

// On one rank every expert is local: the rank maps the whole file.
TEST(EngineTest, OneRankLoadsEverything) {
  const std::string path = TinyModel("ud-1.58");
  LocalCommunicator comm;
  EngineOptions o = Options(path);
  o.model.threads = 0;
  auto engine = Engine::Create(o, &comm);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const EngineRankInfo& me = (*engine)->ranks()[0];
  EXPECT_EQ((*engine)->weight_bytes_loaded(), me.file_tensor_bytes);
  EXPECT_EQ(me.num_local_experts, 16 * 2);  // tiny: 16 experts x 2 MoE layers
  EXPECT_EQ((*engine)->threads(), std::max(1, DefaultThreadCount()));
  EXPECT_EQ(me.pid, getpid());
}

// Replicated + experts/N per rank, exactly, for any N (including N that does not divide 16).
TEST(RankWeightsTest, ExpertsSplitAcrossRanks) {
  const std::string path = TinyModel("ud-1.58");
  auto file = gguf::GgufModel::Open(path);
  ASSERT_TRUE(file.ok());
  auto config = ModelConfig::FromGguf(**file);
  ASSERT_TRUE(config.ok());
  const int n_moe = config->n_layer - config->n_dense_lead;
  int64_t stack_bytes = 0;  // all routed-expert tensors, counted independently
  for (const auto& t : (*file)->tensors()) {
    if (t.name.find("_exps.weight") != std::string::npos) stack_bytes += t.nbytes;
  }
  for (int n = 1; n <= 5; ++n) {
    auto placements = PlacementsFromSpec("contiguous", n_moe, config->n_expert, n);
    ASSERT_TRUE(placements.ok());
    int64_t experts_sum = 0;
    for (int r = 0; r < n; ++r) {
      RankWeightBytes b = CountRankWeightBytes(**file, *config, *placements, r);
      EXPECT_EQ(b.replicated + stack_bytes, b.file);
      const int mine = 16 / n + (r < 16 % n ? 1 : 0);
      EXPECT_EQ(b.experts, stack_bytes / 16 * mine) << "n=" << n << " rank " << r;
      experts_sum += b.experts;
    }
    EXPECT_EQ(experts_sum, stack_bytes);
  }
}

TEST(StepCodecTest, RoundTripsEveryField) {
  StepMessage m;
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 40;
  p.top_p = 0.9f;
  p.min_p = 0.1f;
  p.seed = 0x123456789abcull;
  p.max_tokens = 77;
  p.min_tokens = 3;
  p.stop = {"</s>", "", "stop\n"};
  p.stop_token_ids = {5, 6};
  p.ignore_eos = true;
  m.step.start.push_back({.id = 42, .sampling = p, .capacity = 100});
  m.owners = {3};
  m.step.items.push_back(
      {.id = 42, .tokens = {1, 2, 3}, .sample = false, .logits = LogitsRequest::kAll});
  m.step.items.push_back({.id = 9, .tokens = {7}, .sample = true, .logits = LogitsRequest::kNone});
  m.step.release = {9, 11};
  auto d = DecodeStepMessage(EncodeStepMessage(m));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->step.start.size(), 1u);
  const SamplingParams& q = d->step.start[0].sampling;
  EXPECT_EQ(q.temperature, p.temperature);
  EXPECT_EQ(q.top_k, p.top_k);
  EXPECT_EQ(q.top_p, p.top_p);
  EXPECT_EQ(q.min_p, p.min_p);
  EXPECT_EQ(q.seed, p.seed);
  EXPECT_EQ(q.max_tokens, p.max_tokens);
  EXPECT_EQ(q.min_tokens, p.min_tokens);
  EXPECT_EQ(q.stop, p.stop);
  EXPECT_EQ(q.stop_token_ids, p.stop_token_ids);
  EXPECT_EQ(q.ignore_eos, p.ignore_eos);
  EXPECT_EQ(d->step.start[0].id, 42u);
  EXPECT_EQ(d->step.start[0].capacity, 100);
  EXPECT_EQ(d->owners, m.owners);
  ASSERT_EQ(d->step.items.size(), 2u);
  EXPECT_EQ(d->step.items[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(d->step.items[0].sample);
  EXPECT_EQ(d->step.items[0].logits, LogitsRequest::kAll);
  EXPECT_EQ(d->step.items[1].id, 9u);
  EXPECT_TRUE(d->step.items[1].sample);
  EXPECT_EQ(d->step.release, m.step.release);

  std::vector<uint8_t> bytes = EncodeStepMessage(m);
  for (size_t cut : {size_t{0}, size_t{3}, bytes.size() / 2, bytes.size() - 1}) {
    auto t = DecodeStepMessage(std::span<const uint8_t>(bytes.data(), cut));
    EXPECT_FALSE(t.ok()) << "cut at " << cut;
  }

  RankResult rr;
  rr.status = absl::InternalError("boom");
  rr.items.push_back({.item = 1, .token = 5, .logits = {1.5f, -2.0f}});
  rr.times = {.attention_s = 0.5,
              .moe_compute_s = 0.25,
              .dispatch_s = 0.125,
              .combine_s = 1e-9,
              .other_s = 3.0,
              .tokens = 17};
  auto back = DecodeRankResult(EncodeRankResult(rr));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->status, rr.status);
  ASSERT_EQ(back->items.size(), 1u);
  EXPECT_EQ(back->items[0].token, 5);
  EXPECT_EQ(back->items[0].logits, rr.items[0].logits);
  EXPECT_EQ(back->times.attention_s, 0.5);
  EXPECT_EQ(back->times.moe_compute_s, 0.25);
  EXPECT_EQ(back->times.dispatch_s, 0.125);
  EXPECT_EQ(back->times.combine_s, 1e-9);
  EXPECT_EQ(back->times.other_s, 3.0);
  EXPECT_EQ(back->times.tokens, 17);
  EXPECT_FALSE(DecodeRankResult(EncodeStepMessage(m)).ok());
}

// The EP exchange on one rank against LocalExpertExchange, with stand-in experts (expert e
// scales its row by e + 1): the same combined output up to summation order.
TEST(EpExpertExchangeTest, MatchesLocalExchange) {
  ModelConfig c;
  c.n_layer = 3;
  c.n_dense_lead = 1;
  c.n_embd = 32;
  c.n_expert = 8;
  c.n_expert_used = 3;
  auto placements = PlacementsFromSpec("contiguous", 2, c.n_expert, 1);
  ASSERT_TRUE(placements.ok());
  auto ep = EpExpertExchange::Create(c, *placements, 1);
  ASSERT_TRUE(ep.ok()) << ep.status();
  LocalCommunicator comm;
  ExpertBatch early;
  Routing none;
  EXPECT_EQ((*ep)->Dispatch(1, nullptr, c.n_embd, none, &early).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*ep)->Connect(16, &comm).ok());

  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int n_tokens : {0, 1, 7, 16}) {
    std::vector<float> h(n_tokens * c.n_embd);
    for (float& x : h) x = u(rng);
    Routing routing;
    routing.n_tokens = n_tokens;
    routing.k = c.n_expert_used;
    for (int t = 0; t < n_tokens; ++t) {
      std::vector<int32_t> all(c.n_expert);
      for (int e = 0; e < c.n_expert; ++e) all[e] = e;
      std::shuffle(all.begin(), all.end(), rng);
      for (int j = 0; j < routing.k; ++j) {
        routing.experts.push_back(all[j]);
        routing.weights.push_back(u(rng));
      }
    }
    auto run = [&](ExpertExchange& x) {
      ExpertBatch b;
      EXPECT_TRUE(x.Dispatch(2, h.data(), c.n_embd, routing, &b).ok());
      for (size_t i = 0; i < b.experts.size(); ++i) {
        for (int64_t r = b.offsets[i]; r < b.offsets[i + 1]; ++r) {
          for (int d = 0; d < c.n_embd; ++d) {
            b.output[r * c.n_embd + d] = (b.experts[i] + 1) * b.input[r * c.n_embd + d];
          }
        }
      }
      std::vector<float> y(n_tokens * c.n_embd, 123.0f);
      EXPECT_TRUE(x.Combine(b, routing, y.data()).ok());
      return y;
    };
    LocalExpertExchange local;
    std::vector<float> want = run(local), got = run(**ep);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 1e-5f * (1 + std::fabs(want[i]))) << n_tokens << " " << i;
    }
  }
  ExpertBatch b;
  Routing r;
  EXPECT_FALSE((*ep)->Dispatch(0, nullptr, c.n_embd, r, &b).ok());  // a dense layer
}

}  // namespace
}  // namespace tritmoe
