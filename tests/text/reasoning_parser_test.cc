#include "runtime/text/reasoning_parser.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

struct Case {
  bool starts_in_reasoning;
  std::string output;
  std::string reasoning;
  std::string content;
};

const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      {true, "Let me add.\n</think>\n\nThe answer is 4.", "Let me add.\n", "\n\nThe answer is 4."},
      {false, "<think>abc</think>def", "abc", "def"},
      {false, "  \n<think>\nabc</think>", "\nabc", ""},
      {false, "plain answer", "", "plain answer"},
      {false, "<thinking> is not a tag", "", "<thinking> is not a tag"},
      {false, "<thi", "", "<thi"},  // output ended while it could still have been the tag
      {true, "<think>\nstep</think>done", "\nstep", "done"},  // a redundant opening tag
      {true, "unterminated </thin", "unterminated </thin", ""},
      {true, "a</think>b</think>c<think>d", "a", "b</think>c<think>d"},
      {true, "</think>", "", ""},
      {true, "思考中……</think>答案：4", "思考中……", "答案：4"},
      {false, "", "", ""},
  };
  return *cases;
}

ReasoningParser::Delta ParseInChunks(const Case& c, const std::vector<size_t>& cuts) {
  ReasoningParser p(c.starts_in_reasoning);
  ReasoningParser::Delta total;
  size_t prev = 0;
  for (size_t cut : cuts) {
    auto d = p.Push(std::string_view(c.output).substr(prev, cut - prev));
    total.reasoning += d.reasoning;
    total.content += d.content;
    prev = cut;
  }
  auto d = p.Push(std::string_view(c.output).substr(prev));
  total.reasoning += d.reasoning;
  total.content += d.content;
  d = p.Finish();
  total.reasoning += d.reasoning;
  total.content += d.content;
  return total;
}

TEST(ReasoningParserTest, WholeOutput) {
  for (const Case& c : Cases()) {
    const auto d = ParseInChunks(c, {});
    EXPECT_EQ(d.reasoning, c.reasoning) << c.output;
    EXPECT_EQ(d.content, c.content) << c.output;
  }
}

TEST(ReasoningParserTest, EveryChunkBoundaryGivesTheSameSplit) {
  for (const Case& c : Cases()) {
    // Two chunks, cut at every byte.
    for (size_t cut = 0; cut <= c.output.size(); ++cut) {
      const auto d = ParseInChunks(c, {cut});
      EXPECT_EQ(d.reasoning, c.reasoning) << c.output << " cut at " << cut;
      EXPECT_EQ(d.content, c.content) << c.output << " cut at " << cut;
    }
    // One byte at a time.
    std::vector<size_t> cuts;
    for (size_t i = 1; i < c.output.size(); ++i) cuts.push_back(i);
    const auto d = ParseInChunks(c, cuts);
    EXPECT_EQ(d.reasoning, c.reasoning) << c.output;
    EXPECT_EQ(d.content, c.content) << c.output;
  }
}

TEST(ReasoningParserTest, HoldsBackOnlyWhatCouldBeATag) {
  ReasoningParser p(/*starts_in_reasoning=*/true);
  EXPECT_EQ(p.Push("step one </th").reasoning, "step one ");
  EXPECT_TRUE(p.in_reasoning());
  EXPECT_EQ(p.Push("ink>").reasoning, "");
  EXPECT_TRUE(p.reasoning_ended());
  EXPECT_EQ(p.Push("Answer").content, "Answer");
  ReasoningParser q(/*starts_in_reasoning=*/false);
  EXPECT_EQ(q.Push("<").content, "");
  EXPECT_EQ(q.Push("b>bold").content, "<b>bold");
}

}  // namespace
}  // namespace tritmoe
