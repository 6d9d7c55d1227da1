// What the expert cache did: hit rate, bytes read from the store per token, time the forward
// pass stalled waiting for expert bytes, per MoE layer and in total.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tritmoe {

struct LayerCacheStats {
  int layer = -1;               // model layer; -1 in a total
  int64_t tokens = 0;           // tokens that went through the layer on this rank
  int64_t hits = 0;             // experts asked for and found (prefetched ones included)
  int64_t misses = 0;           // experts fetched on demand
  int64_t prefetched = 0;       // experts loaded ahead of use by the prefetcher
  int64_t prefetch_used = 0;    // ... and asked for before being evicted
  int64_t prefetch_errors = 0;  // prefetch reads that failed (the demand read reports the error)
  int64_t evictions = 0;
  int64_t bytes_read = 0;  // from the store, on demand and prefetched
  double stall_s = 0.0;    // the forward pass waited for expert bytes

  int64_t requests() const { return hits + misses; }
  double hit_rate() const { return requests() == 0 ? 0.0 : double(hits) / requests(); }
  void Add(const LayerCacheStats& o);
};

struct ExpertCacheStats {
  int64_t budget_bytes = 0;     // as asked; 0 = unlimited
  int64_t slots_per_layer = 0;  // what the budget buys
  int64_t capacity_bytes = 0;   // slots_per_layer * one expert's bytes, summed over layers
  int64_t resident_bytes = 0;   // slots allocated so far
  bool prefetch = false;
  std::vector<LayerCacheStats> layers;  // MoE layers, ascending

  // Sum over layers; tokens = the most any layer saw (every token passes every MoE layer).
  LayerCacheStats Total() const;
  double bytes_per_token() const;
  // One line: "expert cache: 12 slots/layer (40.2 MiB of 64 MiB), hit rate 71.3% ...".
  std::string Summary() const;
  // One line per layer, for --verbose.
  std::string PerLayerTable() const;
};

}  // namespace tritmoe
