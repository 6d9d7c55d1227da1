#include "runtime/text/stop_checker.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

constexpr int32_t kEos = 1;

struct Result {
  std::vector<std::string> emitted;  // per step
  FinishReason finish = FinishReason::kNone;
};

Result RunChecker(const SamplingParams& p,
                  const std::vector<std::pair<int32_t, std::string>>& tokens) {
  StopChecker c(p, kEos);
  Result r;
  for (const auto& [id, text] : tokens) {
    StopChecker::Step s = c.Push(id, text);
    r.emitted.push_back(s.text);
    if (s.finish != FinishReason::kNone) {
      r.finish = s.finish;
      break;
    }
  }
  return r;
}

SamplingParams WithStop(std::vector<std::string> stop) {
  SamplingParams p;
  p.stop = std::move(stop);
  return p;
}

using Steps = std::vector<std::string>;

TEST(StopCheckerTest, StopStringSpanningTokens) {
  const Result r =
      RunChecker(WithStop({"STOP"}), {{10, "Hello S"}, {11, "TO"}, {12, "P and more"}});
  EXPECT_EQ(r.emitted, (Steps{"Hello ", "", ""}));
  EXPECT_EQ(r.finish, FinishReason::kStopString);
}

TEST(StopCheckerTest, HeldTextIsReleasedWhenItIsNotAStop) {
  const Result r = RunChecker(WithStop({"STOP"}), {{10, "ST"}, {11, "ART"}, {12, " S"}, {13, "x"}});
  EXPECT_EQ(r.emitted, (Steps{"", "START", " ", "Sx"}));
  EXPECT_EQ(r.finish, FinishReason::kNone);
}

TEST(StopCheckerTest, EarliestStopStringWinsAndTextBeforeItIsKept) {
  StopChecker c(WithStop({"world", "lo w"}), kEos);
  const StopChecker::Step s = c.Push(5, "hello world");
  EXPECT_EQ(s.text, "hel");
  EXPECT_EQ(s.finish, FinishReason::kStopString);
  EXPECT_EQ(c.matched_stop(), "lo w");
  EXPECT_TRUE(c.finished());
  EXPECT_EQ(c.Push(6, "more").text, "");  // finished: nothing more
}

TEST(StopCheckerTest, MultiByteStopString) {
  const Result r = RunChecker(WithStop({"。\n"}), {{3, "你好"}, {4, "。"}, {5, "\n再见"}});
  EXPECT_EQ(r.emitted, (Steps{"你好", "", ""}));
  EXPECT_EQ(r.finish, FinishReason::kStopString);
}

TEST(StopCheckerTest, EosAndStopTokensReleaseHeldText) {
  Result r = RunChecker(WithStop({"STOP"}), {{10, "ab ST"}, {kEos, ""}});
  EXPECT_EQ(r.emitted, (Steps{"ab ", "ST"}));
  EXPECT_EQ(r.finish, FinishReason::kEos);
  SamplingParams p;
  p.stop_token_ids = {77};
  StopChecker c(p, kEos);
  c.Push(10, "x");
  const StopChecker::Step s = c.Push(77, "<tok>");
  EXPECT_EQ(s.text, "");  // the stop token's own text is not emitted
  EXPECT_EQ(s.finish, FinishReason::kStopToken);
  EXPECT_EQ(c.matched_token(), 77);
  p.ignore_eos = true;
  r = RunChecker(p, {{kEos, ""}, {10, "go"}});
  EXPECT_EQ(r.finish, FinishReason::kNone);
}

TEST(StopCheckerTest, MaxTokensFlushesHeldText) {
  SamplingParams p = WithStop({"STOP"});
  p.max_tokens = 2;
  const Result r = RunChecker(p, {{10, "a"}, {11, "ST"}, {12, "OP"}});
  EXPECT_EQ(r.emitted, (Steps{"a", "ST"}));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_STREQ(FinishReasonName(r.finish), "length");
}

TEST(StopCheckerTest, NothingStopsBeforeMinTokens) {
  SamplingParams p = WithStop({"x"});
  p.min_tokens = 2;
  const Result r = RunChecker(p, {{kEos, ""}, {10, "x"}, {11, "ax"}});
  EXPECT_EQ(r.emitted, (Steps{"", "x", "a"}));
  EXPECT_EQ(r.finish, FinishReason::kStopString);
}

TEST(StopCheckerTest, FlushReturnsHeldText) {
  StopChecker c(WithStop({"</answer>"}), kEos);
  EXPECT_EQ(c.Push(10, "42</ans").text, "42");
  EXPECT_EQ(c.Flush(), "</ans");
}

}  // namespace
}  // namespace tritmoe
