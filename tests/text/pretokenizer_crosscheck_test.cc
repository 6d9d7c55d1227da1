// Cross-check of the PCRE2 pre-tokenizer against an independent Python implementation that uses
// the third-party `regex` module on the pattern file itself (tests/text/pretokenizer_ref.py).
// Skipped when python3 or its `regex` module is not available.
#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/pretokenizer.h"

namespace tritmoe {
namespace {

TEST(PreTokenizerCrossCheckTest, MatchesPythonRegexReference) {
  const std::string cmd = std::string("python3 ") + TRITMOE_SOURCE_DIR +
                          "/tests/text/pretokenizer_ref.py " + TRITMOE_SOURCE_DIR +
                          "/runtime/deepseek_v3_pretokenizer_regex.txt 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  const int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    GTEST_SKIP() << "python3 with the `regex` module is not available (status " << status << ")";
  }
  const nlohmann::json doc = nlohmann::json::parse(output);
  const PreTokenizer pre = PreTokenizer::CreateDeepSeekV3().value();
  int checked = 0;
  for (const auto& c : doc.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const auto expected = c.at("pieces").get<std::vector<std::string>>();
    std::vector<std::string_view> views;
    ASSERT_TRUE(pre.Split(text, &views).ok());
    const std::vector<std::string> got(views.begin(), views.end());
    EXPECT_EQ(got, expected) << "text: \"" << text << "\"";
    ++checked;
  }
  EXPECT_GT(checked, 400);
}

}  // namespace
}  // namespace tritmoe
