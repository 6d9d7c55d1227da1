#include "runtime/text/tokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/text/test_vocab.h"

namespace tritmoe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::tritmoe::testing;  // NOLINT: the test vocabulary's ids

const Tokenizer& TestTokenizer() {
  static const Tokenizer* t = new Tokenizer(Tokenizer::Create(MakeTestVocab()).value());
  return *t;
}

std::vector<int32_t> Enc(const std::string& text, bool add_bos = false, bool special = false) {
  auto ids = TestTokenizer().Encode(text, add_bos, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(TokenizerTest, MergesApplyInRankOrder) {
  // "hello": ll (rank 0) first, then he (1), he+ll (2), hell+o (3).
  // " world": Ġw (4), or (5), Ġw+or (6); "l" and "d" stay bytes.
  EXPECT_THAT(Enc("hello world"), ElementsAre(kHello, kGwor, 'l', 'd'));
  // "abc": b+c has rank 7 < a+b's rank 8, so bc wins although ab is further left.
  EXPECT_THAT(Enc("abc"), ElementsAre('a', kBc));
  EXPECT_THAT(Enc("abd"), ElementsAre(kAb, 'd'));
  // Equal ranks: the leftmost pair merges first.
  EXPECT_THAT(Enc("aaa"), ElementsAre(kAa, 'a'));
  EXPECT_THAT(Enc("aaaa"), ElementsAre(kAa, kAa));
  // Pre-tokenizer boundaries stop merges: "hel" and "lo" are separate pieces around the digit,
  // so "ll" cannot form across them.
  EXPECT_THAT(Enc("hel1lo"), ElementsAre(kHe, 'l', '1', 'l', 'o'));
  // Bytes outside ASCII go through their own byte tokens (Ġ for the space of " w").
  EXPECT_THAT(Enc(" w\xC3\xA9"), ElementsAre(kGw, 0xC3, 0xA9));
}

TEST(TokenizerTest, BosIsAddedOnceAtMost) {
  EXPECT_THAT(Enc("hello", /*add_bos=*/true), ElementsAre(kBos, kHello));
  EXPECT_THAT(Enc("", /*add_bos=*/true), ElementsAre(kBos));
  // The text already starts with BOS: no second one.
  EXPECT_THAT(Enc("<｜begin▁of▁sentence｜>hello", true, /*special=*/true),
              ElementsAre(kBos, kHello));
}

TEST(TokenizerTest, SpecialTokensMatchedFirstAndNeverSplit) {
  EXPECT_THAT(Enc("<｜User｜>hello<｜end▁of▁sentence｜>", false, /*special=*/true),
              ElementsAre(kUser, kHello, kEos));
  // A special token glued to letters still splits the text there.
  EXPECT_THAT(Enc("ab<think>ab", false, true), ElementsAre(kAb, kThink, kAb));
  // Without parse_special, control tokens are plain text; user-defined ones still match.
  const std::vector<int32_t> plain = Enc("<｜User｜><think>", false, /*special=*/false);
  EXPECT_EQ(plain.back(), kThink);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kUser), 0);
  EXPECT_GT(plain.size(), 5u);
  EXPECT_EQ(TestTokenizer().Decode(plain).value(), "<｜User｜><think>");
  // Unused tokens are never produced.
  const std::vector<int32_t> pad_text = Enc("[PAD270]", false, true);
  EXPECT_EQ(std::count(pad_text.begin(), pad_text.end(), kPad), 0);
}

TEST(TokenizerTest, DecodeRendersSpecialTokensByType) {
  const Tokenizer& t = TestTokenizer();
  const std::vector<int32_t> ids = {kBos, kUser, kHello, kThink, kGwor, kEos, kPad};
  EXPECT_EQ(t.Decode(ids).value(), "hello<think> wor");
  EXPECT_EQ(t.Decode(ids, /*render_special=*/true).value(),
            "<｜begin▁of▁sentence｜><｜User｜>hello<think> wor<｜end▁of▁sentence｜>[PAD270]");
  EXPECT_EQ(t.TokenToPiece(kGw).value(), " w");
  EXPECT_EQ(t.TokenToPiece(kBos).value(), "");
  EXPECT_EQ(t.FindToken("<｜User｜>"), kUser);
  EXPECT_EQ(t.FindToken("nope"), std::nullopt);
}

TEST(TokenizerTest, InvalidIdsAreReported) {
  const Tokenizer& t = TestTokenizer();
  auto s = t.Decode({kHello, 271});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("271"));
  EXPECT_FALSE(t.TokenToPiece(-1).ok());
  EXPECT_FALSE(t.CheckId(271).ok());
  EXPECT_TRUE(t.CheckId(270).ok());
}

TEST(TokenizerTest, RoundTripsArbitraryBytes) {
  const Tokenizer& t = TestTokenizer();
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 500; ++iter) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    EXPECT_EQ(t.Decode(Enc(s)).value(), s) << "iteration " << iter;
  }
}

TEST(TokenizerTest, RoundTripsUnicodeText) {
  const Tokenizer& t = TestTokenizer();
  const std::vector<std::string> pool = {"hello",
                                         " world",
                                         "  ",
                                         "\n",
                                         "\r\n",
                                         "\t",
                                         "123456",
                                         "é",
                                         "e\xCC\x81",
                                         "你好",
                                         "世界",
                                         "，",
                                         "ひらがな",
                                         "カタカナ",
                                         "안녕",
                                         "\xF0\x9F\x98\x80",
                                         "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
                                         "<think>",
                                         "<｜User｜>",
                                         "abc",
                                         "'s",
                                         "!?",
                                         "\xFF",
                                         "\xE4\xBD",
                                         "½",
                                         "\xC2\xA0"};
  std::mt19937_64 rng(11);
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    for (int k = rng() % 12; k > 0; --k) s += pool[rng() % pool.size()];
    EXPECT_EQ(t.Decode(Enc(s)).value(), s);
    // With special parsing, control tokens come back only when rendered.
    EXPECT_EQ(t.Decode(Enc(s, false, true), /*render_special=*/true).value(), s);
  }
}

TEST(TokenizerTest, CreateRejectsBadVocabularies) {
  auto err = [](VocabData v) { return Tokenizer::Create(std::move(v)).status(); };
  VocabData v = MakeTestVocab();
  v.pre = "llama3";
  EXPECT_THAT(err(v).message(), HasSubstr("tokenizer.ggml.pre"));
  v = MakeTestVocab();
  v.token_types.pop_back();
  EXPECT_THAT(err(v).message(), HasSubstr("token_type"));
  v = MakeTestVocab();
  v.token_types[3] = 9;
  EXPECT_THAT(err(v).message(), HasSubstr("token_type[3]"));
  v = MakeTestVocab();
  v.eos_id = 5000;
  EXPECT_THAT(err(v).message(), HasSubstr("eos_token_id"));
  v = MakeTestVocab();
  v.merges.push_back("nospace");
  EXPECT_THAT(err(v).message(), HasSubstr("merges[10]"));
  // A missing byte token only fails inputs that contain the byte.
  v = MakeTestVocab();
  v.tokens[10] = "x\xC4\x8A";  // the newline byte token ('Ċ') is gone
  auto no_newline = Tokenizer::Create(v);
  ASSERT_TRUE(no_newline.ok()) << no_newline.status();
  EXPECT_TRUE(no_newline->Encode("hello world", false, false).ok());
  EXPECT_THAT(no_newline->Encode("a\nb", false, false).status().message(), HasSubstr("0x0A"));
  // Merges that mention unknown tokens are skipped, not fatal.
  v = MakeTestVocab();
  v.merges.push_back("zz top");
  auto t = Tokenizer::Create(v);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->skipped_merges(), 1);
}

}  // namespace
}  // namespace tritmoe

namespace tritmoe {
namespace {

// Long runs exercise PCRE2's backtracking limits and the JIT stack (whitespace runs make the
// "\s*[\r\n]+" and "\s+(?!\S)" alternatives backtrack across the whole run).
TEST(TokenizerTest, LongInputs) {
  const Tokenizer& t = TestTokenizer();
  std::mt19937_64 rng(1);
  std::string mixed(1 << 18, ' ');
  for (char& c : mixed) c = " \n\ta1,"[rng() % 6];
  for (const std::string& s :
       {std::string(1 << 18, ' '), std::string(1 << 18, '\n'), std::string(1 << 18, 'a'),
        std::string(1 << 18, '7'), std::string(1 << 18, ' ') + "x", mixed}) {
    auto ids = t.Encode(s, false, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(t.Decode(*ids).value(), s);
  }
}

}  // namespace
}  // namespace tritmoe
