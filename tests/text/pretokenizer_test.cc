// Splits worked out by hand from the three DeepSeek-V3 regexes (formats.md §6.3); the comments
// name the alternative of the third regex that produces each piece:
//   (a) ASCII punct + ASCII letters   (b) optional non-letter/punct/symbol + letters/marks
//   (c) optional space + punct/symbols + CR/LFs   (d) spaces ending in CR/LF
//   (e) spaces not followed by a non-space   (f) other spaces
#include "runtime/text/pretokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tritmoe {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(const std::string& text) {
  static const PreTokenizer* pre = new PreTokenizer(PreTokenizer::CreateDeepSeekV3().value());
  std::vector<std::string_view> views;
  EXPECT_TRUE(pre->Split(text, &views).ok());
  std::vector<std::string> out(views.begin(), views.end());
  std::string joined;
  for (const auto& p : out) joined += p;
  EXPECT_EQ(joined, text) << "pieces must cover the text exactly";
  return out;
}

TEST(PreTokenizerTest, WordsAndLeadingSpaces) {
  EXPECT_THAT(Split("Hello world"), ElementsAre("Hello", " world"));  // (b) (b)
  EXPECT_THAT(Split("I've"), ElementsAre("I", "'ve"));                // (b) (a)
  EXPECT_THAT(Split("Hello, world!"), ElementsAre("Hello", ",", " world", "!"));
  EXPECT_THAT(Split("foo.bar()"), ElementsAre("foo", ".bar", "()"));  // (b) (a) (c)
  EXPECT_THAT(Split("\tfoo"), ElementsAre("\tfoo"));                  // (b) with a tab prefix
}

TEST(PreTokenizerTest, DigitsInGroupsOfAtMostThree) {
  EXPECT_THAT(Split("1234567"), ElementsAre("123", "456", "7"));
  EXPECT_THAT(Split("12345"), ElementsAre("123", "45"));
  EXPECT_THAT(Split("abc123def"), ElementsAre("abc", "123", "def"));
  EXPECT_THAT(Split("$100.50"), ElementsAre("$", "100", ".", "50"));
  EXPECT_THAT(Split("x 42"), ElementsAre("x", " ", "42"));  // the space is left alone: (e)
  // \p{N} covers other scripts' digits and other numbers: Arabic-Indic digits, vulgar fractions.
  EXPECT_THAT(Split("\xD9\xA3\xD9\xA4\xD9\xA5\xD9\xA6"),
              ElementsAre("\xD9\xA3\xD9\xA4\xD9\xA5", "\xD9\xA6"));
  EXPECT_THAT(Split("x\xC2\xBD"), ElementsAre("x", "\xC2\xBD"));  // U+00BD is \p{No}
}

TEST(PreTokenizerTest, SpacesAndNewlines) {
  EXPECT_THAT(Split("  hello"), ElementsAre(" ", " hello"));    // (e) backs off one space, (b)
  EXPECT_THAT(Split("a\n\nb"), ElementsAre("a", "\n\n", "b"));  // (d)
  EXPECT_THAT(Split("x  \n  y"), ElementsAre("x", "  \n", " ", " y"));  // (d) (e) (b)
  EXPECT_THAT(Split("x \r\n"), ElementsAre("x", " \r\n"));              // (d)
  EXPECT_THAT(Split("end.\n"), ElementsAre("end", ".\n"));  // (c) takes the trailing newline
  EXPECT_THAT(Split("a  "), ElementsAre("a", "  "));        // (e) at the end
}

TEST(PreTokenizerTest, CjkRunsAreIsolatedBeforeTheMainPattern) {
  // 我爱北京天安门: all in U+4E00-U+9FA5, one piece.
  EXPECT_THAT(Split("我爱北京天安门"), ElementsAre("我爱北京天安门"));
  EXPECT_THAT(Split("Hello世界123"), ElementsAre("Hello", "世界", "123"));
  // The fullwidth comma U+FF0C is not in the CJK class; (c) takes it.
  EXPECT_THAT(Split("你好，世界"), ElementsAre("你好", "，", "世界"));
  // A space before CJK is cut off by the second regex and stays alone.
  EXPECT_THAT(Split(" 你好"), ElementsAre(" ", "你好"));
  // Hiragana and katakana (incl. the prolonged sound mark U+30FC) form one run.
  EXPECT_THAT(Split("ひらがなカタカナー"), ElementsAre("ひらがなカタカナー"));
  // Hangul is not in the CJK class: the main pattern keeps the space with the word.
  EXPECT_THAT(Split("a 안녕하세요"), ElementsAre("a", " 안녕하세요"));
}

TEST(PreTokenizerTest, SymbolsMarksAndEmoji) {
  EXPECT_THAT(Split("hi \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"),  // emoji are \p{So}: (c)
              ElementsAre("hi", " \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"));
  EXPECT_THAT(Split("cafe\xCC\x81 ok"), ElementsAre("cafe\xCC\x81", " ok"));  // U+0301 is \p{M}
  EXPECT_THAT(Split("a+=b;"), ElementsAre("a", "+=", "b", ";"));
  EXPECT_THAT(Split("x == -y"), ElementsAre("x", " ==", " -", "y"));
}

TEST(PreTokenizerTest, InvalidUtf8BytesArePreserved) {
  // 0xFF never matches; it stays in an unmatched stretch between the matches around it.
  EXPECT_THAT(Split("ab\xFF"
                    "cd"),
              ElementsAre("ab", "\xFF", "cd"));
  EXPECT_THAT(Split("\xE4\xBD"), ElementsAre("\xE4\xBD"));
  EXPECT_TRUE(Split("").empty());
}

}  // namespace
}  // namespace tritmoe
