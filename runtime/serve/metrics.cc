#include "runtime/serve/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"

namespace tritmoe {
namespace {

// Integers print exactly; other values with enough digits to round-trip a float.
std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 9.0e15) return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.9g", v);
}

std::string Escape(const std::string& s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

bool ValidName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

}  // namespace

MetricFamily::MetricFamily(Type type, std::string name, std::string help,
                           std::vector<std::string> labels, std::vector<double> buckets)
    : type_(type),
      name_(std::move(name)),
      help_(std::move(help)),
      labels_(std::move(labels)),
      buckets_(std::move(buckets)) {}

MetricFamily::Series& MetricFamily::Get(const LabelValues& labels) {
  TM_CHECK(labels.size() == labels_.size())
      << name_ << ": " << labels.size() << " label values for " << labels_.size() << " labels";
  auto [it, inserted] = series_.try_emplace(labels);
  if (inserted && type_ == Type::kHistogram) it->second.bucket_counts.assign(buckets_.size(), 0);
  return it->second;
}

void MetricFamily::Inc(const LabelValues& labels, double by) {
  if (!(by >= 0)) return;
  std::lock_guard<std::mutex> lock(mu_);
  Get(labels).value += by;
}

void MetricFamily::Set(const LabelValues& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  Get(labels).value = value;
}

void MetricFamily::Add(const LabelValues& labels, double by) {
  std::lock_guard<std::mutex> lock(mu_);
  Get(labels).value += by;
}

void MetricFamily::Observe(const LabelValues& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  Series& s = Get(labels);
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (value <= buckets_[i]) {
      ++s.bucket_counts[i];
      break;
    }
  }
  ++s.count;
  s.sum += value;
}

double MetricFamily::Value(const LabelValues& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(labels);
  if (it == series_.end()) return 0;
  return type_ == Type::kHistogram ? static_cast<double>(it->second.count) : it->second.value;
}

std::string MetricFamily::LabelText(const LabelValues& values, const std::string& extra) const {
  std::string out;
  for (size_t i = 0; i < labels_.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", labels_[i], "=\"", Escape(values[i], true), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", extra);
  return out.empty() ? out : absl::StrCat("{", out, "}");
}

void MetricFamily::Render(std::string* out) const {
  static constexpr const char* kTypeNames[] = {"counter", "gauge", "histogram"};
  absl::StrAppend(out, "# HELP ", name_, " ", Escape(help_, false), "\n", "# TYPE ", name_, " ",
                  kTypeNames[static_cast<int>(type_)], "\n");
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, s] : series_) {
    if (type_ != Type::kHistogram) {
      absl::StrAppend(out, name_, LabelText(values, ""), " ", FormatValue(s.value), "\n");
      continue;
    }
    uint64_t cumulative = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      cumulative += s.bucket_counts[i];
      absl::StrAppend(out, name_, "_bucket",
                      LabelText(values, absl::StrCat("le=\"", FormatValue(buckets_[i]), "\"")), " ",
                      cumulative, "\n");
    }
    absl::StrAppend(out, name_, "_bucket", LabelText(values, "le=\"+Inf\""), " ", s.count, "\n");
    absl::StrAppend(out, name_, "_sum", LabelText(values, ""), " ", FormatValue(s.sum), "\n");
    absl::StrAppend(out, name_, "_count", LabelText(values, ""), " ", s.count, "\n");
  }
}

MetricFamily* MetricsRegistry::Add(std::unique_ptr<MetricFamily> family) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& f : families_) {
    TM_CHECK(f->name() != family->name()) << "metric '" << f->name() << "' registered twice";
  }
  families_.push_back(std::move(family));
  return families_.back().get();
}

MetricFamily* MetricsRegistry::AddCounter(std::string name, std::string help,
                                          std::vector<std::string> labels) {
  TM_CHECK(ValidName(name)) << "bad metric name '" << name << "'";
  return Add(std::make_unique<MetricFamily>(MetricFamily::Type::kCounter, std::move(name),
                                            std::move(help), std::move(labels),
                                            std::vector<double>{}));
}

MetricFamily* MetricsRegistry::AddGauge(std::string name, std::string help,
                                        std::vector<std::string> labels) {
  TM_CHECK(ValidName(name)) << "bad metric name '" << name << "'";
  return Add(std::make_unique<MetricFamily>(MetricFamily::Type::kGauge, std::move(name),
                                            std::move(help), std::move(labels),
                                            std::vector<double>{}));
}

MetricFamily* MetricsRegistry::AddHistogram(std::string name, std::string help,
                                            std::vector<std::string> labels,
                                            std::vector<double> buckets) {
  TM_CHECK(ValidName(name)) << "bad metric name '" << name << "'";
  for (size_t i = 1; i < buckets.size(); ++i) {
    TM_CHECK(buckets[i - 1] < buckets[i]) << name << ": buckets must ascend";
  }
  return Add(std::make_unique<MetricFamily>(MetricFamily::Type::kHistogram, std::move(name),
                                            std::move(help), std::move(labels),
                                            std::move(buckets)));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& f : families_) f->Render(&out);
  return out;
}

}  // namespace tritmoe
