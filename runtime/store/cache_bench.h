// `tritmoe bench-cache`: what the expert cache costs and saves on this machine. For each budget
// (and prefetch off/on) a fresh model with a fresh cache runs one prefill of `prompt` tokens,
// then `tokens` greedy decode steps of `batch` sequences; the resident run (experts read in place
// from the mapped file, no cache) is the first row. Each cell is the median of `reps` runs.
// Decode figures (tok/s, hit rate, bytes per token, stall) cover the decode steps only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tritmoe {

struct CacheBenchConfig {
  std::string model;
  std::string store;                     // empty: the model file
  std::vector<int64_t> budgets_mb;       // 0 = unlimited
  std::vector<bool> prefetch = {false};  // each budget with each setting
  int threads = 0;
  int prompt = 64;
  int tokens = 32;
  int batch = 1;
  int reps = 3;

  absl::Status Validate() const;
};

struct CacheBenchRow {
  bool resident = false;  // no cache: the mapped file
  int64_t budget_mb = 0;
  bool prefetch = false;
  int64_t slots_per_layer = 0;
  double prefill_tok_s = 0;
  double decode_tok_s = 0;
  double hit_rate = 0;            // decode
  double mib_per_token = 0;       // decode: bytes read from the store per token
  double stall_ms_per_token = 0;  // decode
  double prefetch_used = 0;       // decode: fraction of prefetched experts that were used
};

absl::StatusOr<std::vector<CacheBenchRow>> RunCacheBench(const CacheBenchConfig& config);

// A Markdown table of the rows.
std::string FormatCacheBench(const CacheBenchConfig& config,
                             const std::vector<CacheBenchRow>& rows);

}  // namespace tritmoe
