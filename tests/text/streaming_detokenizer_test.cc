#include "runtime/text/streaming_detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/text/utf8.h"
#include "tests/text/test_vocab.h"

namespace tritmoe {
namespace {

using namespace ::tritmoe::testing;  // NOLINT

const Tokenizer& TestTokenizer() {
  static const Tokenizer* t = new Tokenizer(Tokenizer::Create(MakeTestVocab()).value());
  return *t;
}

TEST(StreamingDetokenizerTest, HoldsBackAFourByteCharacterUntilComplete) {
  StreamingDetokenizer d(TestTokenizer());
  // 'a', then U+1F600 as its four byte tokens, then 'b'.
  const std::vector<int32_t> ids = {'a', 0xF0, 0x9F, 0x98, 0x80, 'b'};
  const std::vector<std::string> expected = {"a", "", "", "", "\xF0\x9F\x98\x80", "b"};
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(d.Push(ids[i]).value(), expected[i]) << "token " << i;
  }
  EXPECT_EQ(d.pending_bytes(), 0u);
  EXPECT_EQ(d.Flush(), "");
}

TEST(StreamingDetokenizerTest, ReplacesBytesThatCannotFormACharacter) {
  StreamingDetokenizer d(TestTokenizer());
  EXPECT_EQ(d.Push(0xFF).value(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.Push(0xF0).value(), "");
  EXPECT_EQ(d.Push('x').value(), "\xEF\xBF\xBDx");  // the lead byte was cut short
  EXPECT_EQ(d.Push(0xE4).value(), "");
  EXPECT_EQ(d.Push(0xBD).value(), "");
  EXPECT_EQ(d.pending_bytes(), 2u);
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");  // unfinished at the end of the stream
}

TEST(StreamingDetokenizerTest, InvalidIdFailsWithoutChangingState) {
  StreamingDetokenizer d(TestTokenizer());
  EXPECT_EQ(d.Push(0xE4).value(), "");
  EXPECT_FALSE(d.Push(99999).ok());
  EXPECT_EQ(d.Push(0xBD).value(), "");
  EXPECT_EQ(d.Push(0xA0).value(), "你");
}

TEST(StreamingDetokenizerTest, StreamedTextEqualsSanitizedDecode) {
  const Tokenizer& t = TestTokenizer();
  std::mt19937_64 rng(3);
  for (int iter = 0; iter < 200; ++iter) {
    std::vector<int32_t> ids(rng() % 30);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % t.n_vocab());
    StreamingDetokenizer d(t);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = d.Push(id).value();
      EXPECT_TRUE(IsValidUtf8(piece));
      streamed += piece;
    }
    streamed += d.Flush();
    EXPECT_EQ(streamed, SanitizeUtf8(t.Decode(ids).value()));
  }
}

}  // namespace
}  // namespace tritmoe
