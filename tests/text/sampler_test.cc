#include "runtime/text/sampler.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tritmoe {
namespace {

using ::testing::HasSubstr;

// Logits whose softmax at temperature 1 is exactly `probs`.
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

const std::vector<double> kProbs = {0.05, 0.5, 0.15, 0.2, 0.1};  // by id

SamplingParams Plain() {  // temperature 1, no filters
  SamplingParams p;
  p.temperature = 1.0f, p.top_p = 1.0f, p.min_p = 0.0f;
  return p;
}

std::vector<TokenProb> Dist(const SamplingParams& p, const std::vector<double>& probs = kProbs,
                            int32_t eos_id = -1, int32_t num_generated = 0) {
  auto s = Sampler::Create(p, static_cast<int32_t>(probs.size()), eos_id);
  EXPECT_TRUE(s.ok()) << s.status();
  auto d = s->Distribution(LogitsOf(probs), num_generated);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : std::vector<TokenProb>{};
}

void ExpectDist(const std::vector<TokenProb>& got,
                const std::vector<std::pair<int32_t, double>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].id, want[i].first) << "rank " << i;
    EXPECT_NEAR(got[i].prob, want[i].second, 1e-6) << "rank " << i;
  }
}

TEST(SamplingParamsTest, ValidationNamesTheField) {
  const auto msg = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    const absl::Status s = p.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_TRUE(SamplingParams().Validate().ok());
  EXPECT_THAT(msg([](auto& p) { p.temperature = -0.1f; }), HasSubstr("SamplingParams.temperature"));
  EXPECT_THAT(msg([](auto& p) { p.temperature = NAN; }), HasSubstr("temperature"));
  EXPECT_THAT(msg([](auto& p) { p.top_p = 0.0f; }), HasSubstr("SamplingParams.top_p"));
  EXPECT_THAT(msg([](auto& p) { p.top_p = 1.5f; }), HasSubstr("top_p"));
  EXPECT_THAT(msg([](auto& p) { p.top_k = -1; }), HasSubstr("SamplingParams.top_k"));
  EXPECT_THAT(msg([](auto& p) { p.min_p = 1.01f; }), HasSubstr("SamplingParams.min_p"));
  EXPECT_THAT(msg([](auto& p) { p.max_tokens = 0; }), HasSubstr("SamplingParams.max_tokens"));
  EXPECT_THAT(msg([](auto& p) { p.min_tokens = p.max_tokens + 1; }), HasSubstr("min_tokens"));
  EXPECT_THAT(msg([](auto& p) { p.stop = {"ok", ""}; }), HasSubstr("SamplingParams.stop[1]"));
  EXPECT_THAT(msg([](auto& p) { p.stop_token_ids = {-3}; }), HasSubstr("stop_token_ids[0]"));
  SamplingParams p;
  p.stop_token_ids = {5};
  EXPECT_THAT(Sampler::Create(p, 5, 1).status().message(), HasSubstr("stop_token_ids[0]"));
  p.temperature = -1;
  EXPECT_THAT(Sampler::Create(p, 5, 1).status().message(), HasSubstr("temperature"));
}

TEST(SamplingParamsTest, DefaultsAreTheR1Recommendation) {
  const SamplingParams p;
  EXPECT_FLOAT_EQ(p.temperature, 0.6f);
  EXPECT_FLOAT_EQ(p.top_p, 0.95f);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
  EXPECT_EQ(p.top_k, 0);
}

TEST(SamplerTest, FiltersOnHandMadeDistribution) {
  // Sorted: id1 0.5, id3 0.2, id2 0.15, id4 0.1, id0 0.05.
  ExpectDist(Dist(Plain()), {{1, 0.5}, {3, 0.2}, {2, 0.15}, {4, 0.1}, {0, 0.05}});
  SamplingParams p = Plain();
  p.top_k = 2;
  ExpectDist(Dist(p), {{1, 0.5 / 0.7}, {3, 0.2 / 0.7}});
  p = Plain();
  p.top_p = 0.75f;  // 0.5, 0.7 < 0.75, 0.85 >= 0.75: three tokens
  ExpectDist(Dist(p), {{1, 0.5 / 0.85}, {3, 0.2 / 0.85}, {2, 0.15 / 0.85}});
  p.top_p = 0.69f;
  ExpectDist(Dist(p), {{1, 0.5 / 0.7}, {3, 0.2 / 0.7}});
  p.top_p = 0.4f;  // the top token alone already reaches it
  ExpectDist(Dist(p), {{1, 1.0}});
  p = Plain();
  p.min_p = 0.25f;  // threshold 0.125: drops 0.1 and 0.05
  ExpectDist(Dist(p), {{1, 0.5 / 0.85}, {3, 0.2 / 0.85}, {2, 0.15 / 0.85}});
  p.min_p = 0.35f;  // threshold 0.175
  ExpectDist(Dist(p), {{1, 0.5 / 0.7}, {3, 0.2 / 0.7}});
  p.top_p = 0.6f;  // both filters: the stricter one (top-p keeps 2, min-p keeps 2) - same set
  ExpectDist(Dist(p), {{1, 0.5 / 0.7}, {3, 0.2 / 0.7}});
  p = Plain();
  p.temperature = 0.5f;  // probabilities become proportional to p^2
  const double z = 0.25 + 0.04 + 0.0225 + 0.01 + 0.0025;
  ExpectDist(Dist(p),
             {{1, 0.25 / z}, {3, 0.04 / z}, {2, 0.0225 / z}, {4, 0.01 / z}, {0, 0.0025 / z}});
}

TEST(SamplerTest, MinTokensAndIgnoreEosMaskEos) {
  SamplingParams p = Plain();
  p.min_tokens = 3;
  // EOS = id 1 (the most likely token) is masked before 3 tokens were generated.
  auto d = Dist(p, kProbs, /*eos_id=*/1, /*num_generated=*/2);
  ASSERT_EQ(d.size(), 4u);
  EXPECT_EQ(d[0].id, 3);
  EXPECT_NEAR(d[0].prob, 0.4, 1e-6);
  EXPECT_EQ(Dist(p, kProbs, 1, 3)[0].id, 1);
  p.min_tokens = 0;
  p.ignore_eos = true;
  EXPECT_EQ(Dist(p, kProbs, 1, 100)[0].id, 3);
  p.ignore_eos = false;
  p.stop_token_ids = {3};
  p.min_tokens = 1;
  d = Dist(p, kProbs, 1, 0);
  EXPECT_EQ(d.size(), 3u);  // both EOS and the stop token are masked
}

TEST(SamplerTest, GreedyIsArgmaxAndTopK1IsGreedy) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int iter = 0; iter < 50; ++iter) {
    std::vector<float> logits(1000);
    for (float& l : logits) l = nd(rng);
    const int32_t argmax =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    auto greedy = Sampler::Create(SamplingParams::Greedy(), 1000, -1).value();
    EXPECT_EQ(greedy.Sample(logits, 0).value(), argmax);
    SamplingParams p = Plain();
    p.top_k = 1;
    p.seed = iter;
    auto topk1 = Sampler::Create(p, 1000, -1).value();
    EXPECT_EQ(topk1.Sample(logits, 0).value(), argmax);
  }
  // Ties go to the lower id.
  auto greedy = Sampler::Create(SamplingParams::Greedy(), 4, -1).value();
  EXPECT_EQ(greedy.Sample(std::vector<float>{1, 7, 7, 2}, 0).value(), 1);
}

std::vector<int32_t> Draws(uint64_t seed, int n) {
  SamplingParams p = Plain();
  p.seed = seed;
  auto s = Sampler::Create(p, 100, -1).value();
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = 0.01f * i;  // nearly flat
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.Sample(logits, i).value());
  return out;
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  EXPECT_EQ(Draws(42, 64), Draws(42, 64));
  EXPECT_NE(Draws(42, 64), Draws(43, 64));
}

TEST(SamplerTest, DrawFrequenciesFollowTheDistribution) {
  SamplingParams p = Plain();
  p.seed = 9;
  auto s = Sampler::Create(p, 5, -1).value();
  const std::vector<float> logits = LogitsOf(kProbs);
  std::vector<int> hist(5);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++hist[s.Sample(logits, 0).value()];
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(hist[i] / double(n), kProbs[i], 0.01) << "id " << i;
}

TEST(SamplerTest, BadLogitsAreErrors) {
  auto s = Sampler::Create(Plain(), 3, 0).value();
  EXPECT_THAT(s.Sample(std::vector<float>{1, 2}, 0).status().message(), HasSubstr("n_vocab = 3"));
  EXPECT_THAT(s.Sample(std::vector<float>{1, NAN, 2}, 0).status().message(), HasSubstr("NaN"));
  SamplingParams p = Plain();
  p.ignore_eos = true;
  auto only_eos = Sampler::Create(p, 1, 0).value();
  EXPECT_FALSE(only_eos.Sample(std::vector<float>{0.0f}, 0).ok());
}

}  // namespace
}  // namespace tritmoe
