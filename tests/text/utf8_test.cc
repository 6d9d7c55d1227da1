#include "runtime/text/utf8.h"

#include <string>

#include "gtest/gtest.h"
#include "runtime/text/byte_unicode.h"

namespace tritmoe {
namespace {

TEST(Utf8Test, ScanClassifiesWellFormedIllFormedAndIncomplete) {
  const std::string euro = "\xE2\x82\xAC";  // U+20AC
  Utf8Unit u = ScanUtf8(euro, 0);
  EXPECT_EQ(u.kind, Utf8Unit::kValid);
  EXPECT_EQ(u.length, 3);
  EXPECT_EQ(u.codepoint, 0x20ACu);

  u = ScanUtf8(std::string("\xF0\x9F\x98\x80"), 0);  // U+1F600
  EXPECT_EQ(u.kind, Utf8Unit::kValid);
  EXPECT_EQ(u.codepoint, 0x1F600u);

  EXPECT_EQ(ScanUtf8(std::string("\xF0\x9F\x98"), 0).kind, Utf8Unit::kIncomplete);
  EXPECT_EQ(ScanUtf8(std::string("\xF0\x9F\x98"), 0).length, 3);
  EXPECT_EQ(ScanUtf8(std::string("\xC0\x80"), 0).kind, Utf8Unit::kInvalid);      // overlong lead
  EXPECT_EQ(ScanUtf8(std::string("\xE0\x80\x80"), 0).kind, Utf8Unit::kInvalid);  // overlong
  EXPECT_EQ(ScanUtf8(std::string("\xED\xA0\x80"), 0).kind, Utf8Unit::kInvalid);  // surrogate
  EXPECT_EQ(ScanUtf8(std::string("\xF4\x90\x80\x80"), 0).kind, Utf8Unit::kInvalid);  // >10FFFF
  EXPECT_EQ(ScanUtf8(std::string("\x80"), 0).kind, Utf8Unit::kInvalid);
  // A lead byte followed by a non-continuation: the maximal subpart is the lead alone.
  u = ScanUtf8(std::string("\xE2\x82x"), 0);
  EXPECT_EQ(u.kind, Utf8Unit::kInvalid);
  EXPECT_EQ(u.length, 2);
}

TEST(Utf8Test, SanitizeReplacesEachMaximalSubpart) {
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(SanitizeUtf8("\xFF\xFE"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(SanitizeUtf8("ok \xE4\xBD\xA0"), "ok \xE4\xBD\xA0");
  EXPECT_EQ(SanitizeUtf8("tail\xF0\x9F"), "tail\xEF\xBF\xBD");
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo"));
  EXPECT_FALSE(IsValidUtf8("h\xC3"));
}

TEST(Utf8Test, AppendUtf8EncodesAllLengths) {
  std::string s;
  for (uint32_t cp : {0x41u, 0xE9u, 0x4F60u, 0x1F600u}) AppendUtf8(cp, &s);
  EXPECT_EQ(s, "A\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80");
}

TEST(ByteUnicodeTest, MatchesGpt2Alphabet) {
  EXPECT_EQ(ByteToCodepoint('A'), 0x41u);
  EXPECT_EQ(ByteToCodepoint(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(ByteToCodepoint('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(ByteToCodepoint(0x00), 0x100u);
  EXPECT_EQ(ByteToCodepoint(0x7F), 0x121u);  // after 0x00-0x20 (33 bytes)
  EXPECT_EQ(ByteToCodepoint(0xAD), 0x143u);  // the last remapped byte
  EXPECT_EQ(ByteToCodepoint(0xFF), 0xFFu);
  // A bijection onto 256 distinct codepoints, inverted by CodepointToByte.
  for (int b = 0; b < 256; ++b) EXPECT_EQ(CodepointToByte(ByteToCodepoint(b)), b);
  EXPECT_EQ(CodepointToByte(0x20), -1);
  EXPECT_EQ(BytesToVisible(" hi\n"), "\xC4\xA0hi\xC4\x8A");
  EXPECT_EQ(VisibleToBytes("\xC4\xA0hi\xC4\x8A").value(), " hi\n");
  EXPECT_FALSE(VisibleToBytes(" ").has_value());  // a raw space is not in the alphabet
}

}  // namespace
}  // namespace tritmoe
