// The batched forward pass against itself: prefill at once vs token-by-token decode (absorbed
// MLA), naive vs absorbed, chunked prefill, a batch of sequences vs each alone, and the errors
// a step must report before touching any cache.
#include "runtime/model/model.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/model/model_test_util.h"

namespace tritmoe {
namespace {

const std::vector<int32_t> kTokens = {5, 42, 79, 116, 153, 190, 227, 264, 17};

class ModelForwardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::ScratchDir("forward"));
    mla_ = new std::string(testing::MakeTinyModel(*dir_, "mla", "--layout mla --seed 3"));
    legacy_ = new std::string(testing::MakeTinyModel(*dir_, "legacy", "--layout legacy --seed 3"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete mla_;
    delete legacy_;
  }

  static std::unique_ptr<Model> Load(const std::string& path, KvCacheType kv,
                                     AttentionForm form = AttentionForm::kAuto, int threads = 1) {
    ModelOptions o;
    o.threads = threads;
    o.precision = ActPrecision::kFloat;
    o.kv_type = kv;
    o.attention = form;
    o.max_context = 64;
    auto m = Model::Load(path, o);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }

  // Logits after every token of `tokens`, in one step.
  static std::vector<float> Prefill(Model& m, const std::vector<int32_t>& tokens) {
    auto cache = m.NewKvCache();
    EXPECT_TRUE(cache.ok());
    StepOutput out;
    absl::Status s = m.Step({{cache->get(), tokens, LogitsRequest::kAll}}, &out);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ((*cache)->size(), static_cast<int64_t>(tokens.size()));
    return out.logits;
  }

  // Logits after every token, one step per token.
  static std::vector<float> Decode(Model& m, const std::vector<int32_t>& tokens) {
    auto cache = m.NewKvCache();
    EXPECT_TRUE(cache.ok());
    std::vector<float> all;
    for (int32_t t : tokens) {
      StepOutput out;
      absl::Status s = m.Step({{cache->get(), {&t, 1}, LogitsRequest::kLast}}, &out);
      EXPECT_TRUE(s.ok()) << s;
      all.insert(all.end(), out.logits.begin(), out.logits.end());
    }
    return all;
  }

  static std::string* dir_;
  static std::string* mla_;
  static std::string* legacy_;
};
std::string* ModelForwardTest::dir_ = nullptr;
std::string* ModelForwardTest::mla_ = nullptr;
std::string* ModelForwardTest::legacy_ = nullptr;

// With an exact (f32) cache the two forms agree to float rounding. A lossy cache may round the
// two paths' (slightly different) latent rows to different codes now and then, one code step of
// one element, hence the looser bounds for those.
TEST_F(ModelForwardTest, PrefillMatchesTokenByTokenDecode) {
  const std::vector<std::pair<KvCacheType, double>> kinds = {{KvCacheType::kF32, 2e-5},
                                                             {KvCacheType::kF16, 2e-3},
                                                             {KvCacheType::kQ8_0, 1e-2},
                                                             {KvCacheType::kQ4_0, 5e-2}};
  for (const std::string* path : {mla_, legacy_}) {
    for (const auto& [kv, bound] : kinds) {
      std::unique_ptr<Model> m = Load(*path, kv);
      ASSERT_NE(m, nullptr);
      const std::vector<float> prefill = Prefill(*m, kTokens);  // naive form
      const std::vector<float> decode = Decode(*m, kTokens);    // absorbed form
      ASSERT_EQ(prefill.size(), kTokens.size() * m->n_vocab());
      const double err = testing::RelError(decode, prefill);
      EXPECT_LE(err, bound) << *path << " kv " << KvCacheTypeName(kv);
      EXPECT_EQ(testing::ArgmaxMismatches(decode, prefill, m->n_vocab()), 0);
      std::printf("%s kv %s: rel err %.3g\n", path->c_str(), KvCacheTypeName(kv).data(), err);
    }
  }
}

TEST_F(ModelForwardTest, NaiveAndAbsorbedPrefillAgree) {
  for (const std::string* path : {mla_, legacy_}) {
    std::unique_ptr<Model> naive = Load(*path, KvCacheType::kF32, AttentionForm::kNaive);
    std::unique_ptr<Model> absorbed = Load(*path, KvCacheType::kF32, AttentionForm::kAbsorbed);
    EXPECT_LE(testing::RelError(Prefill(*absorbed, kTokens), Prefill(*naive, kTokens)), 2e-5)
        << *path;
  }
}

TEST_F(ModelForwardTest, BothLayoutsGiveTheSameModel) {
  // make_tiny_np.py draws the same weights for both layouts of a seed.
  std::unique_ptr<Model> a = Load(*mla_, KvCacheType::kF32);
  std::unique_ptr<Model> b = Load(*legacy_, KvCacheType::kF32);
  EXPECT_EQ(a->config().kv_layout, KvProjLayout::kSplit);
  EXPECT_EQ(b->config().kv_layout, KvProjLayout::kLegacy);
  EXPECT_LE(testing::RelError(Prefill(*b, kTokens), Prefill(*a, kTokens)), 2e-5);
}

TEST_F(ModelForwardTest, ChunkedPrefillMatchesOneStep) {
  std::unique_ptr<Model> m = Load(*mla_, KvCacheType::kQ8_0);
  const std::vector<float> whole = Prefill(*m, kTokens);
  auto cache = m->NewKvCache();
  ASSERT_TRUE(cache.ok());
  std::vector<float> chunks;
  StepOutput out;
  const std::vector<int32_t> a(kTokens.begin(), kTokens.begin() + 4);
  const std::vector<int32_t> b(kTokens.begin() + 4, kTokens.end());
  ASSERT_TRUE(m->Step({{cache->get(), a, LogitsRequest::kAll}}, &out).ok());
  chunks = out.logits;
  ASSERT_TRUE(m->Step({{cache->get(), b, LogitsRequest::kAll}}, &out).ok());
  chunks.insert(chunks.end(), out.logits.begin(), out.logits.end());
  EXPECT_LE(testing::RelError(chunks, whole), 2e-5);
}

TEST_F(ModelForwardTest, BatchOfThreeEqualsEachAlone) {
  for (const std::string* path : {mla_, legacy_}) {
    std::unique_ptr<Model> m = Load(*path, KvCacheType::kF32, AttentionForm::kAuto, 2);
    const std::vector<int32_t> s0 = {7, 8, 9, 10, 11};
    const std::vector<int32_t> s1 = {200};
    const std::vector<int32_t> s2_ctx = {1, 2, 3}, s2 = {44, 55, 66};
    const std::vector<int32_t> s3_ctx = {250, 251, 252, 253}, s3 = {99};  // decode with context

    // Alone.
    std::vector<std::vector<float>> alone;
    for (const auto& [ctx, toks] :
         std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>>{
             {{}, s0}, {{}, s1}, {s2_ctx, s2}, {s3_ctx, s3}}) {
      auto cache = m->NewKvCache();
      StepOutput out;
      if (!ctx.empty())
        ASSERT_TRUE(m->Step({{cache->get(), ctx, LogitsRequest::kNone}}, &out).ok());
      ASSERT_TRUE(m->Step({{cache->get(), toks, LogitsRequest::kAll}}, &out).ok());
      alone.push_back(out.logits);
    }

    // Together: contexts first (one batched step), then all four sequences in one step.
    std::vector<std::unique_ptr<KvCache>> caches;
    for (int i = 0; i < 4; ++i) caches.push_back(*m->NewKvCache());
    StepOutput out;
    ASSERT_TRUE(m->Step({{caches[2].get(), s2_ctx, LogitsRequest::kNone},
                         {caches[3].get(), s3_ctx, LogitsRequest::kNone}},
                        &out)
                    .ok());
    EXPECT_TRUE(out.logits.empty());
    ASSERT_TRUE(m->Step({{caches[0].get(), s0, LogitsRequest::kAll},
                         {caches[1].get(), s1, LogitsRequest::kAll},
                         {caches[2].get(), s2, LogitsRequest::kAll},
                         {caches[3].get(), s3, LogitsRequest::kAll}},
                        &out)
                    .ok());
    const std::vector<size_t> lens = {s0.size(), s1.size(), s2.size(), s3.size()};
    for (size_t s = 0; s < 4; ++s) {
      ASSERT_EQ(out.n_rows[s], static_cast<int64_t>(lens[s]));
      std::vector<float> got(out.Row(s, 0), out.Row(s, 0) + lens[s] * m->n_vocab());
      EXPECT_LE(testing::RelError(got, alone[s]), 1e-5) << *path << " sequence " << s;
    }
    EXPECT_EQ(caches[0]->size(), 5);
    EXPECT_EQ(caches[3]->size(), 5);
  }
}

// Long enough that the attention loops split across threads (small ones run inline).
TEST_F(ModelForwardTest, ThreadsDoNotChangeTheResult) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 60; ++i) tokens.push_back((i * 97 + 13) % 300);
  std::unique_ptr<Model> one = Load(*legacy_, KvCacheType::kF32, AttentionForm::kAuto, 1);
  std::unique_ptr<Model> two = Load(*legacy_, KvCacheType::kF32, AttentionForm::kAuto, 2);
  EXPECT_LE(testing::RelError(Prefill(*two, tokens), Prefill(*one, tokens)), 1e-6);
  std::unique_ptr<Model> two_abs = Load(*mla_, KvCacheType::kF32, AttentionForm::kAbsorbed, 2);
  std::unique_ptr<Model> one_naive = Load(*mla_, KvCacheType::kF32, AttentionForm::kNaive, 1);
  EXPECT_LE(testing::RelError(Prefill(*two_abs, tokens), Prefill(*one_naive, tokens)), 2e-5);
}

TEST_F(ModelForwardTest, LastLogitsRequestGivesTheFinalRow) {
  std::unique_ptr<Model> m = Load(*mla_, KvCacheType::kF32);
  const std::vector<float> all = Prefill(*m, kTokens);
  auto cache = m->NewKvCache();
  StepOutput out;
  ASSERT_TRUE(m->Step({{cache->get(), kTokens, LogitsRequest::kLast}}, &out).ok());
  ASSERT_EQ(out.n_rows[0], 1);
  const int64_t V = m->n_vocab();
  std::vector<float> last(all.end() - V, all.end());
  std::vector<float> got(out.Row(0, 0), out.Row(0, 0) + V);
  EXPECT_LE(testing::RelError(got, last), 1e-6);
}

TEST_F(ModelForwardTest, BadStepsFailBeforeAnyWork) {
  std::unique_ptr<Model> m = Load(*mla_, KvCacheType::kF16);
  auto cache = m->NewKvCache(4);
  ASSERT_TRUE(cache.ok());
  KvCache* c = cache->get();
  StepOutput out;
  const std::vector<int32_t> two = {1, 2};
  ASSERT_TRUE(m->Step({{c, two, LogitsRequest::kLast}}, &out).ok());

  const std::vector<int32_t> bad_id = {3, 300};
  absl::Status s = m->Step({{c, bad_id, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 300 at index 1 is out of range [0, 300)"), std::string::npos)
      << s;
  const std::vector<int32_t> three = {1, 2, 3};
  s = m->Step({{c, three, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("KV cache full"), std::string::npos) << s;
  s = m->Step({{c, {}, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = m->Step({{c, two, LogitsRequest::kLast}, {c, two, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->size(), 2);  // untouched by every failure

  EXPECT_FALSE(m->NewKvCache(65).ok());  // above max_context
}

TEST_F(ModelForwardTest, NonLocalExpertIsAnError) {
  ModelOptions o;
  o.threads = 1;
  o.precision = ActPrecision::kFloat;
  o.local_experts = std::vector<bool>(8, false);
  o.local_experts[0] = true;
  auto m = Model::Load(*mla_, o);
  ASSERT_TRUE(m.ok()) << m.status();
  auto cache = (*m)->NewKvCache(16);
  StepOutput out;
  absl::Status s = (*m)->Step({{cache->get(), kTokens, LogitsRequest::kLast}}, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ((*cache)->size(), 0);
}

TEST_F(ModelForwardTest, LoadErrors) {
  ModelOptions o;
  auto missing = Model::Load(*dir_ + "/nope.gguf", o);
  EXPECT_FALSE(missing.ok());
  o.threads = -1;
  EXPECT_FALSE(Model::Load(*mla_, o).ok());
}

}  // namespace
}  // namespace tritmoe
