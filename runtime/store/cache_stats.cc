#include "runtime/store/cache_stats.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace tritmoe {
namespace {
double MiB(int64_t b) { return static_cast<double>(b) / (1 << 20); }
}  // namespace

void LayerCacheStats::Add(const LayerCacheStats& o) {
  tokens += o.tokens;
  hits += o.hits;
  misses += o.misses;
  prefetched += o.prefetched;
  prefetch_used += o.prefetch_used;
  prefetch_errors += o.prefetch_errors;
  evictions += o.evictions;
  bytes_read += o.bytes_read;
  stall_s += o.stall_s;
}

LayerCacheStats ExpertCacheStats::Total() const {
  LayerCacheStats t;
  int64_t tokens = 0;
  for (const LayerCacheStats& l : layers) {
    t.Add(l);
    tokens = std::max(tokens, l.tokens);
  }
  t.tokens = tokens;
  return t;
}

double ExpertCacheStats::bytes_per_token() const {
  const LayerCacheStats t = Total();
  return t.tokens == 0 ? 0.0 : static_cast<double>(t.bytes_read) / t.tokens;
}

std::string ExpertCacheStats::Summary() const {
  const LayerCacheStats t = Total();
  std::string budget =
      budget_bytes == 0 ? std::string("unlimited") : absl::StrFormat("%.1f MiB", MiB(budget_bytes));
  std::string s = absl::StrFormat(
      "expert cache: %d slots/layer (%.1f MiB of %s budget, %.1f MiB allocated), hit rate %.1f%% "
      "(%d hits, %d misses), %.2f MiB read per token (%.1f MiB in all), stall %.3f s",
      slots_per_layer, MiB(capacity_bytes), budget, MiB(resident_bytes), 100.0 * t.hit_rate(),
      t.hits, t.misses, bytes_per_token() / (1 << 20), MiB(t.bytes_read), t.stall_s);
  if (prefetch) {
    absl::StrAppendFormat(&s, ", prefetch %d loaded / %d used", t.prefetched, t.prefetch_used);
    if (t.prefetch_errors > 0) absl::StrAppendFormat(&s, " / %d failed", t.prefetch_errors);
  }
  return s;
}

std::string ExpertCacheStats::PerLayerTable() const {
  std::string s = "layer  tokens    hits  misses  hit%   MiB read  stall s  prefetched  used\n";
  for (const LayerCacheStats& l : layers) {
    absl::StrAppendFormat(&s, "%5d %7d %7d %7d %5.1f %10.2f %8.3f %11d %5d\n", l.layer, l.tokens,
                          l.hits, l.misses, 100.0 * l.hit_rate(), MiB(l.bytes_read), l.stall_s,
                          l.prefetched, l.prefetch_used);
  }
  return s;
}

}  // namespace tritmoe
