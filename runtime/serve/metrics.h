// Prometheus metrics written by hand (prometheus-cpp is not in Debian 12): counters, gauges and
// histograms with labels, rendered in the text exposition format 0.0.4:
//
//   # HELP tritmoe_prompt_tokens_total Prompt tokens processed.
//   # TYPE tritmoe_prompt_tokens_total counter
//   tritmoe_prompt_tokens_total{model_name="tiny"} 1234
//
// A family is created once with its label names; each distinct tuple of label values is one
// series, created on first use. Families live as long as the registry; all methods are
// thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tritmoe {

using LabelValues = std::vector<std::string>;

class MetricFamily {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  MetricFamily(Type type, std::string name, std::string help, std::vector<std::string> labels,
               std::vector<double> buckets);

  // Counters: adds `by` (>= 0; negative amounts are ignored).
  void Inc(const LabelValues& labels, double by = 1);
  // Gauges: sets or adds.
  void Set(const LabelValues& labels, double value);
  void Add(const LabelValues& labels, double by);
  // Histograms: records one observation.
  void Observe(const LabelValues& labels, double value);

  const std::string& name() const { return name_; }

  // The current value of a counter/gauge series, or a histogram's count (0 if never used).
  double Value(const LabelValues& labels) const;

  // Appends the family's HELP, TYPE and series lines.
  void Render(std::string* out) const;

 private:
  struct Series {
    double value = 0;                     // counter/gauge
    std::vector<uint64_t> bucket_counts;  // histogram: per upper bound (non-cumulative)
    uint64_t count = 0;
    double sum = 0;
  };
  Series& Get(const LabelValues& labels);  // mu_ held
  std::string LabelText(const LabelValues& values, const std::string& extra) const;

  const Type type_;
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> labels_;
  const std::vector<double> buckets_;  // ascending upper bounds; +Inf is implicit
  mutable std::mutex mu_;
  std::map<LabelValues, Series> series_;
};

class MetricsRegistry {
 public:
  // Names must match [a-zA-Z_][a-zA-Z0-9_]* and be unique (checked: a duplicate is a bug).
  MetricFamily* AddCounter(std::string name, std::string help, std::vector<std::string> labels);
  MetricFamily* AddGauge(std::string name, std::string help, std::vector<std::string> labels);
  MetricFamily* AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                             std::vector<double> buckets);

  // The whole exposition, families in registration order.
  std::string Render() const;

 private:
  MetricFamily* Add(std::unique_ptr<MetricFamily> family);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_;
};

}  // namespace tritmoe
