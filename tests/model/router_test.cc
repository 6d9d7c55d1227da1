// The MoE router on hand-made scores, and the local dispatch/combine exchange.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/router.h"

namespace tritmoe {
namespace {

float Sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }
float Logit(float p) { return std::log(p / (1.0f - p)); }

RouterConfig Plain(int n_expert, int k) {
  RouterConfig c;
  c.n_expert = n_expert;
  c.n_used = k;
  c.gating = GatingFunc::kSigmoid;
  c.weights_norm = true;
  c.weights_scale = 2.5f;
  return c;
}

TEST(RouterTest, SigmoidTopKNormalizedAndScaled) {
  RouterConfig c = Plain(4, 2);
  const std::vector<float> logits = {0.0f, 2.0f, -1.0f, 1.0f};
  Routing r;
  Route(c, logits.data(), nullptr, 1, &r);
  ASSERT_EQ(r.k, 2);
  EXPECT_EQ(r.experts[0], 1);
  EXPECT_EQ(r.experts[1], 3);
  const double p1 = 1 / (1 + std::exp(-2.0)), p3 = 1 / (1 + std::exp(-1.0));
  EXPECT_NEAR(r.weights[0], p1 / (p1 + p3) * 2.5, 1e-6);
  EXPECT_NEAR(r.weights[1], p3 / (p1 + p3) * 2.5, 1e-6);
}

TEST(RouterTest, BiasChangesSelectionButNotWeights) {
  RouterConfig c = Plain(4, 2);
  const std::vector<float> logits = {0.0f, 2.0f, -1.0f, 1.0f};
  const std::vector<float> bias = {0.5f, 0.0f, 0.0f, 0.0f};  // expert 0: 0.5 + 0.5 = 1.0 first
  Routing r;
  Route(c, logits.data(), bias.data(), 1, &r);
  EXPECT_EQ(r.experts[0], 0);
  EXPECT_EQ(r.experts[1], 1);
  const double p0 = 0.5, p1 = 1 / (1 + std::exp(-2.0));
  EXPECT_NEAR(r.weights[0], p0 / (p0 + p1) * 2.5, 1e-6);
  EXPECT_NEAR(r.weights[1], p1 / (p0 + p1) * 2.5, 1e-6);
}

RouterConfig Grouped() {
  RouterConfig c;
  c.n_expert = 8;
  c.n_used = 2;
  c.gating = GatingFunc::kSigmoid;
  c.group_limited = true;
  c.n_group = 4;  // groups {0,1} {2,3} {4,5} {6,7}
  c.n_group_used = 2;
  c.weights_norm = false;
  c.weights_scale = 1.0f;
  return c;
}

TEST(RouterTest, GroupLimitedSelectionUsesSumOfTwoBest) {
  // Expert 0 is the single best, but its group's two-best sum (1.0) loses to groups 1 (1.5) and
  // 2 (1.15); plain top-2 would take experts 0 and 2.
  const std::vector<float> p = {0.95f, 0.05f, 0.8f, 0.7f, 0.6f, 0.55f, 0.1f, 0.1f};
  std::vector<float> logits;
  for (float v : p) logits.push_back(Logit(v));
  Routing r;
  Route(Grouped(), logits.data(), nullptr, 1, &r);
  EXPECT_EQ(r.experts[0], 2);
  EXPECT_EQ(r.experts[1], 3);
  EXPECT_NEAR(r.weights[0], 0.8f, 1e-6);  // no normalization, scale 1
  EXPECT_NEAR(r.weights[1], 0.7f, 1e-6);

  RouterConfig plain = Grouped();
  plain.group_limited = false;
  Route(plain, logits.data(), nullptr, 1, &r);
  EXPECT_EQ(r.experts[0], 0);
  EXPECT_EQ(r.experts[1], 2);
}

TEST(RouterTest, GroupScoresUseTheBiasedScores) {
  const std::vector<float> p = {0.95f, 0.05f, 0.8f, 0.7f, 0.6f, 0.55f, 0.1f, 0.1f};
  std::vector<float> logits;
  for (float v : p) logits.push_back(Logit(v));
  // Expert 1's bias lifts group 0 to 0.95 + 1.05 = 2.0, so groups 0 and 1 are kept, and puts
  // expert 1 (1.05) before expert 0 (0.95).
  std::vector<float> bias(8, 0.0f);
  bias[1] = 1.0f;
  Routing r;
  Route(Grouped(), logits.data(), bias.data(), 1, &r);
  EXPECT_EQ(r.experts[0], 1);
  EXPECT_EQ(r.experts[1], 0);
  EXPECT_NEAR(r.weights[0], 0.05f, 1e-6);  // unbiased
  EXPECT_NEAR(r.weights[1], 0.95f, 1e-6);
}

TEST(RouterTest, TiesGoToLowerIndex) {
  // Every p is exactly 0.5: all groups tie (groups 0 and 1 kept), all experts tie.
  const std::vector<float> logits(8, 0.0f);
  Routing r;
  Route(Grouped(), logits.data(), nullptr, 1, &r);
  EXPECT_EQ(r.experts[0], 0);
  EXPECT_EQ(r.experts[1], 1);
  RouterConfig c = Grouped();
  c.n_used = 3;
  Route(c, logits.data(), nullptr, 1, &r);
  EXPECT_EQ(r.experts, (std::vector<int32_t>{0, 1, 2}));
}

TEST(RouterTest, NormalizationClampsTinySums) {
  RouterConfig c = Plain(4, 2);
  const std::vector<float> logits = {-20.0f, -20.0f, -30.0f, -30.0f};
  Routing r;
  Route(c, logits.data(), nullptr, 1, &r);
  const float p = Sigmoid(-20.0f);  // 2e-9: the sum is far below the clamp
  EXPECT_EQ(r.experts[0], 0);
  EXPECT_EQ(r.experts[1], 1);
  EXPECT_NEAR(r.weights[0], p / 6.103515625e-5 * 2.5, 1e-10);
  EXPECT_NEAR(r.weights[1], p / 6.103515625e-5 * 2.5, 1e-10);
}

TEST(RouterTest, SoftmaxGating) {
  RouterConfig c = Plain(4, 2);
  c.gating = GatingFunc::kSoftmax;
  c.weights_norm = false;
  c.weights_scale = 1.0f;
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, 0.0f};
  Routing r;
  Route(c, logits.data(), nullptr, 1, &r);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + 1.0;
  EXPECT_EQ(r.experts[0], 2);
  EXPECT_EQ(r.experts[1], 1);
  EXPECT_NEAR(r.weights[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(r.weights[1], std::exp(2.0) / z, 1e-6);
}

TEST(RouterTest, TokensAreIndependent) {
  RouterConfig c = Grouped();
  std::vector<float> logits(3 * 8);
  for (int i = 0; i < 24; ++i) logits[i] = std::sin(1.7f * i);
  Routing all;
  Route(c, logits.data(), nullptr, 3, &all);
  for (int t = 0; t < 3; ++t) {
    Routing one;
    Route(c, logits.data() + 8 * t, nullptr, 1, &one);
    for (int j = 0; j < 2; ++j) {
      EXPECT_EQ(all.experts[t * 2 + j], one.experts[j]);
      EXPECT_EQ(all.weights[t * 2 + j], one.weights[j]);
    }
  }
}

TEST(RouterTest, ValidateRejectsImpossibleGroups) {
  RouterConfig c = Grouped();
  EXPECT_TRUE(c.Validate().ok());
  c.n_group = 3;  // 8 experts do not split into 3 groups
  EXPECT_FALSE(c.Validate().ok());
  c = Grouped();
  c.n_group_used = 1;
  c.n_used = 3;  // one group of 2 cannot supply 3 experts
  EXPECT_FALSE(c.Validate().ok());
}

TEST(ExpertExchangeTest, LocalDispatchGroupsByExpertAndCombineSumsInSlotOrder) {
  // 3 tokens, k = 2; hidden[t] = {t + 1, -(t + 1)}.
  Routing r;
  r.n_tokens = 3;
  r.k = 2;
  r.experts = {5, 1, 1, 7, 5, 1};
  r.weights = {0.5f, 0.25f, 1.0f, 2.0f, 0.125f, 4.0f};
  const std::vector<float> hidden = {1, -1, 2, -2, 3, -3};
  LocalExpertExchange ex;
  ExpertBatch b;
  ASSERT_TRUE(ex.Dispatch(3, hidden.data(), 2, r, &b).ok());
  EXPECT_EQ(b.experts, (std::vector<int32_t>{1, 5, 7}));
  EXPECT_EQ(b.offsets, (std::vector<int64_t>{0, 3, 5, 6}));
  // Expert 1 gets tokens 0, 1, 2 in order; expert 5 tokens 0, 2; expert 7 token 1.
  const std::vector<float> want_in = {1, -1, 2, -2, 3, -3, 1, -1, 3, -3, 2, -2};
  EXPECT_EQ(b.input, want_in);
  // A fake expert e multiplies by e.
  for (size_t i = 0; i < b.experts.size(); ++i) {
    for (int64_t row = b.offsets[i]; row < b.offsets[i + 1]; ++row) {
      for (int d = 0; d < 2; ++d) b.output[row * 2 + d] = b.input[row * 2 + d] * b.experts[i];
    }
  }
  std::vector<float> y(6);
  ASSERT_TRUE(ex.Combine(b, r, y.data()).ok());
  for (int t = 0; t < 3; ++t) {
    float want = 0.0f;
    for (int j = 0; j < 2; ++j) want += r.weights[t * 2 + j] * r.experts[t * 2 + j] * (t + 1);
    EXPECT_FLOAT_EQ(y[t * 2], want);
    EXPECT_FLOAT_EQ(y[t * 2 + 1], -want);
  }
}

TEST(ExpertExchangeTest, GroupByExpertTakesOnlySelectedExperts) {
  Routing r;
  r.n_tokens = 2;
  r.k = 2;
  r.experts = {0, 3, 2, 3};
  r.weights = {1, 1, 1, 1};
  const std::vector<float> hidden = {10, 20};
  const std::vector<bool> take = {false, false, true, true};
  ExpertBatch b;
  GroupByExpert(hidden.data(), 1, r, &take, &b);
  EXPECT_EQ(b.experts, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(b.offsets, (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(b.input, (std::vector<float>{20, 10, 20}));
  EXPECT_EQ(b.origin, (std::vector<int64_t>{2, 1, 3}));
}

}  // namespace
}  // namespace tritmoe
