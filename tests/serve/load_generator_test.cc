// bench-serve's statistics: percentiles interpolate linearly like numpy.percentile's default
// (values checked against numpy by hand), and bad load options are refused.
#include "runtime/serve/load_generator.h"

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

TEST(LoadGeneratorTest, SummarizeMatchesNumpy) {
  // numpy.percentile([4, 1, 3, 2, 10], [50, 99]) = [3.0, 9.76]; mean 4.0.
  Distribution d = Summarize({4, 1, 3, 2, 10});
  EXPECT_EQ(d.count, 5);
  EXPECT_DOUBLE_EQ(d.mean, 4.0);
  EXPECT_DOUBLE_EQ(d.median, 3.0);
  EXPECT_NEAR(d.p99, 9.76, 1e-12);
  // Even count: the median is between the middle two.
  EXPECT_DOUBLE_EQ(Summarize({1, 2, 3, 4}).median, 2.5);
  Distribution one = Summarize({7});
  EXPECT_DOUBLE_EQ(one.median, 7);
  EXPECT_DOUBLE_EQ(one.p99, 7);
  EXPECT_EQ(Summarize({}).count, 0);
}

TEST(LoadGeneratorTest, ValidatesOptions) {
  EXPECT_TRUE(LoadOptions{}.Validate().ok());
  EXPECT_FALSE((LoadOptions{.concurrency = 0}).Validate().ok());
  EXPECT_FALSE((LoadOptions{.endpoint = "/v2/generate"}).Validate().ok());
  EXPECT_FALSE((LoadOptions{.range_ratio = 1.0}).Validate().ok());
  EXPECT_FALSE((LoadOptions{.request_rate = -1}).Validate().ok());
  // Nothing listens on port 1: a clear error, not a hang.
  absl::StatusOr<LoadResult> r = RunLoad(LoadOptions{.port = 1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

}  // namespace
}  // namespace tritmoe
