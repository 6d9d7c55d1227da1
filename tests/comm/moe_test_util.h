// Deterministic MoE inputs whose dispatch + combine result is exactly computable, shared by the
// single-process and the mpirun tests.
//
// Values are small integers, weights are multiples of 1/8 and expert e multiplies by (e+1), so
// every product and every sum in the exchange is exact in float32: the combined output must equal
// the locally computed reference bit for bit, whatever the summation order.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "comm/expert_placement.h"
#include "comm/moe_exchange.h"

namespace tritmoe::testing {

struct MoeInputs {
  int n_tokens = 0;
  std::vector<float> x;        // [n_tokens][hidden]
  std::vector<int32_t> ids;    // [n_tokens][top_k], -1 = unused slot
  std::vector<float> weights;  // [n_tokens][top_k]
};

// Rank `rank`'s tokens for `round`. Top-k ids are distinct per token, drawn from a generator
// seeded by (seed, rank, round), so any rank can regenerate any other rank's inputs. When
// `with_unused` is set, some slots are -1 (and a few tokens have none at all).
inline MoeInputs MakeMoeInputs(const MoeExchangeConfig& c, int rank, int round, int n_tokens,
                               uint32_t seed, bool with_unused = true) {
  MoeInputs in;
  in.n_tokens = n_tokens;
  in.x.resize(static_cast<size_t>(n_tokens) * c.hidden);
  in.ids.assign(static_cast<size_t>(n_tokens) * c.top_k, -1);
  in.weights.assign(static_cast<size_t>(n_tokens) * c.top_k, 0.0f);
  std::mt19937 gen(seed * 1000003u + rank * 7919u + round * 104729u);
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < c.hidden; ++h) {
      in.x[static_cast<size_t>(t) * c.hidden + h] =
          static_cast<float>(static_cast<int>((rank * 131 + round * 29 + t * 17 + h) % 19) - 9);
    }
    const int skip_all = with_unused && gen() % 23 == 0;
    for (int k = 0; k < c.top_k; ++k) {
      if (skip_all || (with_unused && gen() % 11 == 0)) continue;
      int e;
      bool dup;
      do {  // distinct experts per token, as a router picks them
        e = static_cast<int>(gen() % c.num_experts);
        dup = false;
        for (int j = 0; j < k; ++j) dup |= in.ids[static_cast<size_t>(t) * c.top_k + j] == e;
      } while (dup);
      in.ids[static_cast<size_t>(t) * c.top_k + k] = e;
      in.weights[static_cast<size_t>(t) * c.top_k + k] = static_cast<float>(1 + gen() % 4) / 8.0f;
    }
  }
  return in;
}

// out[t] = sum over t's experts e of w * (e+1) * x[t], summed in top-k order.
inline std::vector<float> ReferenceOutput(const MoeExchangeConfig& c, const MoeInputs& in) {
  std::vector<float> out(static_cast<size_t>(in.n_tokens) * c.hidden, 0.0f);
  for (int t = 0; t < in.n_tokens; ++t) {
    for (int k = 0; k < c.top_k; ++k) {
      const int e = in.ids[static_cast<size_t>(t) * c.top_k + k];
      if (e < 0) continue;
      const float w = in.weights[static_cast<size_t>(t) * c.top_k + k];
      for (int h = 0; h < c.hidden; ++h) {
        out[static_cast<size_t>(t) * c.hidden + h] +=
            w * static_cast<float>(e + 1) * in.x[static_cast<size_t>(t) * c.hidden + h];
      }
    }
  }
  return out;
}

// The test "experts": expert e multiplies its input by (e+1).
inline void RunScaleExperts(MoeExchange& ex) {
  const int hidden = ex.config().hidden;
  std::vector<float> y(hidden);
  for (size_t s = 0; s < ex.local_experts().size(); ++s) {
    const float scale = static_cast<float>(ex.local_experts()[s] + 1);
    for (int64_t i = ex.expert_offsets()[s]; i < ex.expert_offsets()[s + 1]; ++i) {
      std::span<const float> x = ex.received_row(ex.entry_rows()[i]);
      for (int h = 0; h < hidden; ++h) y[h] = scale * x[h];
      ex.AddExpertOutput(i, y);
    }
  }
}

// (token, rank) pairs this rank's inputs produce: the rows Dispatch must send (dedupe check).
inline int64_t DistinctDestinations(const MoeExchangeConfig& c, const ExpertPlacement& p, int rank,
                                    const MoeInputs& in) {
  int64_t rows = 0;
  for (int t = 0; t < in.n_tokens; ++t) {
    std::vector<int> dests;
    for (int k = 0; k < c.top_k; ++k) {
      const int e = in.ids[static_cast<size_t>(t) * c.top_k + k];
      if (e < 0) continue;
      const int r = p.RouteToRank(e, int64_t{t} + rank);
      bool seen = false;
      for (int d : dests) seen |= d == r;
      if (!seen) dests.push_back(r);
    }
    rows += static_cast<int64_t>(dests.size());
  }
  return rows;
}

}  // namespace tritmoe::testing
