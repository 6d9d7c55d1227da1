// End to end: the built `tritmoe inspect` binary on the golden file (text and --json), and its
// exit status and message for a file that does not exist.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using ::testing::HasSubstr;

// Runs a shell command, returns its stdout+stderr and sets *status to its exit code.
std::string RunShell(const std::string& cmd, int* status) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int rc = pclose(p);
  *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

const std::string kGolden = std::string(TRITMOE_TEST_DATA) + "/gguf/golden_small.gguf";

TEST(InspectCliTest, Text) {
  int status = 0;
  const std::string out = RunShell(std::string(TRITMOE_BINARY) + " inspect " + kGolden, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("golden-small"));
  EXPECT_THAT(out, HasSubstr("blk.0.attn_q_a.weight"));
  EXPECT_THAT(out, HasSubstr("62.6% of tensor bytes"));
}

TEST(InspectCliTest, Json) {
  int status = 0;
  const std::string out =
      RunShell(std::string(TRITMOE_BINARY) + " inspect --json --no-tensors " + kGolden, &status);
  ASSERT_EQ(status, 0) << out;
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["totals"]["bytes"], 812);
  EXPECT_EQ(j["totals"]["routed_expert_bytes"], 508);
  EXPECT_EQ(j["architecture"], "deepseek2");
  EXPECT_FALSE(j.contains("tensors"));
}

TEST(InspectCliTest, MissingFileFails) {
  int status = 0;
  const std::string out =
      RunShell(std::string(TRITMOE_BINARY) + " inspect /nonexistent/model.gguf", &status);
  EXPECT_EQ(status, 1);
  EXPECT_THAT(out, HasSubstr("/nonexistent/model.gguf"));
}

}  // namespace
