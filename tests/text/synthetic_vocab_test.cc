#include "runtime/text/synthetic_vocab.h"

#include <chrono>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/synthetic_corpus.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {
namespace {

using ::testing::HasSubstr;

void CheckLayout(const VocabData& v, int n) {
  ASSERT_EQ(v.tokens.size(), static_cast<size_t>(n));
  ASSERT_EQ(v.token_types.size(), static_cast<size_t>(n));
  EXPECT_EQ(v.tokens[0], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(v.tokens[1], "<｜end▁of▁sentence｜>");
  EXPECT_EQ(v.tokens[2], "<｜▁pad▁｜>");
  EXPECT_EQ(v.tokens[3 + 'A'], "A");
  EXPECT_EQ(v.tokens[3 + ' '], "Ġ");
  EXPECT_EQ(v.tokens[n - 4], "<think>");
  EXPECT_EQ(v.tokens[n - 3], "</think>");
  EXPECT_EQ(v.tokens[n - 2], "<｜User｜>");
  EXPECT_EQ(v.tokens[n - 1], "<｜Assistant｜>");
  for (int i : {0, 1, 2, n - 2, n - 1}) EXPECT_EQ(v.token_types[i], 3) << i;
  for (int i : {n - 4, n - 3}) EXPECT_EQ(v.token_types[i], 4) << i;
  for (int i = 3; i < n - 4; ++i) ASSERT_EQ(v.token_types[i], 1) << i;
  EXPECT_EQ(v.bos_id, 0);
  EXPECT_EQ(v.eos_id, 1);
  EXPECT_EQ(v.pad_id, 2);
  EXPECT_TRUE(v.add_bos);
  absl::flat_hash_set<std::string> unique(v.tokens.begin(), v.tokens.end());
  EXPECT_EQ(unique.size(), v.tokens.size()) << "token strings must be unique";
}

TEST(SyntheticVocabTest, LayoutAtSeveralSizes) {
  for (int n : {kMinSyntheticVocab, 300, 1024, 32000}) {
    SCOPED_TRACE(n);
    auto v = MakeSyntheticVocab(n, 7);
    ASSERT_TRUE(v.ok()) << v.status();
    CheckLayout(*v, n);
    auto t = Tokenizer::Create(*v);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->skipped_merges(), 0);
  }
}

TEST(SyntheticVocabTest, FullSizeIsFast) {
  const auto start = std::chrono::steady_clock::now();
  auto v = MakeSyntheticVocab(129280, 1);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(v.ok()) << v.status();
  CheckLayout(*v, 129280);
  EXPECT_LT(seconds, 2.0);
  auto t = Tokenizer::Create(*std::move(v));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->skipped_merges(), 0);
  const std::string text = "Hello, 世界! The router keeps the best 8 of 256 experts. 😀";
  EXPECT_EQ(t->Decode(t->Encode(text, true, false).value()).value(), text);
}

TEST(SyntheticVocabTest, LearnedMergesCompressTheirText) {
  const Tokenizer t = Tokenizer::Create(MakeSyntheticVocab(4096, 3).value()).value();
  const std::string text(SyntheticTrainingText());
  const std::vector<int32_t> ids = t.Encode(text, false, false).value();
  EXPECT_EQ(t.Decode(ids).value(), text);
  EXPECT_LT(ids.size() * 3, text.size()) << "BPE should need well under a token per 3 bytes";
  // Common words are single tokens.
  for (const char* word : {" the", " model", " token", "ing"}) {
    EXPECT_EQ(t.Encode(word, false, false).value().size(), 1u) << word;
  }
  // The chat prompt works with this vocabulary.
  auto prompt = RenderR1ChatPrompt({{"user", "What is a mixture of experts?"}}).value();
  const std::vector<int32_t> chat = EncodeChatPrompt(t, prompt).value();
  EXPECT_EQ(chat.front(), 0);
  EXPECT_EQ(chat.back(), t.FindToken("\xC4\x8A").value());  // "\n" as a byte token
}

TEST(SyntheticVocabTest, DeterministicAndSeedOnlyChangesFiller) {
  const VocabData a = MakeSyntheticVocab(20000, 1).value();
  const VocabData b = MakeSyntheticVocab(20000, 1).value();
  const VocabData c = MakeSyntheticVocab(20000, 2).value();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_NE(a.tokens, c.tokens);
  // The learned merges (a prefix) agree across seeds.
  const VocabData small = MakeSyntheticVocab(600, 99).value();
  for (size_t i = 0; i < small.merges.size(); ++i) ASSERT_EQ(small.merges[i], c.merges[i]) << i;
}

TEST(SyntheticVocabTest, RejectsTooSmall) {
  auto v = MakeSyntheticVocab(kMinSyntheticVocab - 1, 0);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.status().message(), HasSubstr("262"));
}

}  // namespace
}  // namespace tritmoe
