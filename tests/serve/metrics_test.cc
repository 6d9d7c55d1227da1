// The hand-written Prometheus exposition: exact text for counters, gauges and histograms
// (cumulative buckets, +Inf, _sum, _count), label escaping, and refusal of bad names.
#include "runtime/serve/metrics.h"

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

TEST(MetricsTest, RendersTheTextFormat) {
  MetricsRegistry r;
  MetricFamily* c = r.AddCounter("x_requests_total", "Requests.", {"code"});
  MetricFamily* g = r.AddGauge("x_running", "Running\nnow \\ here.", {});
  MetricFamily* h = r.AddHistogram("x_latency_seconds", "Latency.", {"m"}, {0.1, 1, 2.5});
  c->Inc({"200"});
  c->Inc({"200"}, 2);
  c->Inc({"4\"0\\4\n"});
  c->Inc({"200"}, -5);  // ignored: counters only go up
  g->Set({}, 3);
  g->Add({}, 0.5);
  h->Observe({"a"}, 0.05);
  h->Observe({"a"}, 0.1);  // on a bound: counted in that bucket
  h->Observe({"a"}, 2);
  h->Observe({"a"}, 100);
  EXPECT_EQ(r.Render(),
            "# HELP x_requests_total Requests.\n"
            "# TYPE x_requests_total counter\n"
            "x_requests_total{code=\"200\"} 3\n"
            "x_requests_total{code=\"4\\\"0\\\\4\\n\"} 1\n"
            "# HELP x_running Running\\nnow \\\\ here.\n"
            "# TYPE x_running gauge\n"
            "x_running 3.5\n"
            "# HELP x_latency_seconds Latency.\n"
            "# TYPE x_latency_seconds histogram\n"
            "x_latency_seconds_bucket{m=\"a\",le=\"0.1\"} 2\n"
            "x_latency_seconds_bucket{m=\"a\",le=\"1\"} 2\n"
            "x_latency_seconds_bucket{m=\"a\",le=\"2.5\"} 3\n"
            "x_latency_seconds_bucket{m=\"a\",le=\"+Inf\"} 4\n"
            "x_latency_seconds_sum{m=\"a\"} 102.15\n"
            "x_latency_seconds_count{m=\"a\"} 4\n");
  EXPECT_EQ(c->Value({"200"}), 3);
  EXPECT_EQ(h->Value({"a"}), 4);
  EXPECT_EQ(h->Value({"b"}), 0);
}

TEST(MetricsDeathTest, BadOrDuplicateNamesAreBugs) {
  MetricsRegistry r;
  EXPECT_DEATH(r.AddCounter("bad-name", "", {}), "bad metric name");
  r.AddGauge("ok_name", "", {});
  EXPECT_DEATH(r.AddGauge("ok_name", "", {}), "registered twice");
  EXPECT_DEATH(r.AddHistogram("h", "", {}, {2, 1}), "ascend");
}

}  // namespace
}  // namespace tritmoe
