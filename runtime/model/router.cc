#include "runtime/model/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace tritmoe {
namespace {

// Indices of the k largest values, largest first, ties to the lower index.
void TopK(const float* v, int n, int k, int* idx_scratch, int32_t* out) {
  std::iota(idx_scratch, idx_scratch + n, 0);
  std::partial_sort(idx_scratch, idx_scratch + k, idx_scratch + n,
                    [v](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  for (int j = 0; j < k; ++j) out[j] = idx_scratch[j];
}

}  // namespace

RouterConfig RouterConfig::FromModel(const ModelConfig& c) {
  RouterConfig r;
  r.n_expert = c.n_expert;
  r.n_used = c.n_expert_used;
  r.gating = c.gating;
  r.group_limited = c.group_limited;
  r.n_group = c.n_group;
  r.n_group_used = c.n_group_used;
  r.weights_norm = c.weights_norm;
  r.weights_scale = c.weights_scale;
  return r;
}

absl::Status RouterConfig::Validate() const {
  if (n_expert <= 0 || n_used <= 0 || n_used > n_expert) {
    return absl::InvalidArgumentError(
        absl::StrCat("router: ", n_used, " of ", n_expert, " experts"));
  }
  if (group_limited) {
    if (n_group <= 1 || n_expert % n_group != 0 || n_expert / n_group < 2 || n_group_used <= 0 ||
        n_group_used > n_group || n_group_used * (n_expert / n_group) < n_used) {
      return absl::InvalidArgumentError(absl::StrCat("router: bad groups: ", n_expert,
                                                     " experts in ", n_group, " groups, keep ",
                                                     n_group_used, ", choose ", n_used));
    }
  }
  return absl::OkStatus();
}

void Route(const RouterConfig& c, const float* logits, const float* bias, int64_t n_tokens,
           Routing* out) {
  TM_CHECK(c.Validate().ok()) << c.Validate().message();
  const int E = c.n_expert, k = c.n_used;
  out->n_tokens = n_tokens;
  out->k = k;
  out->experts.resize(n_tokens * k);
  out->weights.resize(n_tokens * k);
  std::vector<float> p(E), s(E);
  std::vector<int> idx(std::max(E, c.n_group));
  std::vector<float> group_score(c.group_limited ? c.n_group : 0);
  std::vector<int32_t> keep(c.group_limited ? c.n_group_used : 0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* z = logits + t * E;
    switch (c.gating) {
      case GatingFunc::kSigmoid:
        for (int e = 0; e < E; ++e) p[e] = 1.0f / (1.0f + std::exp(-z[e]));
        break;
      case GatingFunc::kSoftmax: {
        const float mx = *std::max_element(z, z + E);
        double sum = 0.0;
        for (int e = 0; e < E; ++e) {
          p[e] = std::exp(z[e] - mx);
          sum += p[e];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int e = 0; e < E; ++e) p[e] *= inv;
        break;
      }
      case GatingFunc::kSqrtSoftplus:
        for (int e = 0; e < E; ++e) {
          // softplus(z) = log(1 + e^z), computed without overflow.
          const float sp =
              z[e] > 0 ? z[e] + std::log1p(std::exp(-z[e])) : std::log1p(std::exp(z[e]));
          p[e] = std::sqrt(sp);
        }
        break;
    }
    for (int e = 0; e < E; ++e) s[e] = bias != nullptr ? p[e] + bias[e] : p[e];
    if (c.group_limited) {
      const int gsize = E / c.n_group;
      for (int g = 0; g < c.n_group; ++g) {
        float best = -std::numeric_limits<float>::infinity(), second = best;
        for (int e = g * gsize; e < (g + 1) * gsize; ++e) {
          if (s[e] > best) {
            second = best;
            best = s[e];
          } else if (s[e] > second) {
            second = s[e];
          }
        }
        group_score[g] = best + second;
      }
      TopK(group_score.data(), c.n_group, c.n_group_used, idx.data(), keep.data());
      std::vector<bool> kept(c.n_group, false);
      for (int32_t g : keep) kept[g] = true;
      for (int e = 0; e < E; ++e) {
        if (!kept[e / gsize]) s[e] = -std::numeric_limits<float>::infinity();
      }
    }
    int32_t* sel = out->experts.data() + t * k;
    float* w = out->weights.data() + t * k;
    TopK(s.data(), E, k, idx.data(), sel);
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
      w[j] = p[sel[j]];
      sum += w[j];
    }
    if (c.weights_norm) {
      const float denom = std::max(sum, kMoeWeightSumClamp);
      for (int j = 0; j < k; ++j) w[j] /= denom;
    }
    for (int j = 0; j < k; ++j) w[j] *= c.weights_scale;
  }
}

}  // namespace tritmoe
