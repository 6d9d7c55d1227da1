// Comparing rows of logits (or any float rows) in tests: a row's max absolute difference relative
// to the reference row's largest magnitude, and the per-row errors and argmax disagreements of many
// rows. Header-only, no CUDA: CPU-only tests and GPU tests share it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tritmoe::testing {

// max_i |a_i - b_i| / max_i |b_i| over one row of n values (a NaN in a counts as infinite).
inline double RowRelError(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    num = std::isnan(d) ? INFINITY : std::max(num, d);
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

// Index of the first maximum of a row.
inline int64_t Argmax(const float* v, int64_t n) { return std::max_element(v, v + n) - v; }

// Per-row errors and argmax mismatches of rows compared one by one.
struct Agreement {
  std::vector<double> row_err;
  int argmax_mismatch = 0;

  // Compares one row of n values against its reference.
  void AddRow(const float* got, const float* ref, int64_t n) {
    row_err.push_back(RowRelError(got, ref, n));
    if (Argmax(got, n) != Argmax(ref, n)) ++argmax_mismatch;
  }
  double Median() const {
    std::vector<double> v = row_err;
    std::sort(v.begin(), v.end());
    return v.empty() ? INFINITY : v[v.size() / 2];
  }
  double Max() const {
    return row_err.empty() ? INFINITY : *std::max_element(row_err.begin(), row_err.end());
  }
};

}  // namespace tritmoe::testing
