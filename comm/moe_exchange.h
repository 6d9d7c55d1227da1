// MoE dispatch and combine over a Communicator's all-to-all (expert parallelism, host memory).
//
// Every rank holds some tokens (data-parallel attention) and some experts (ExpertPlacement). Per
// MoE layer:
//
//   exchange->Dispatch(placement, layer, n_tokens, x, topk_ids, topk_weights);
//   for each local expert slot s (global id exchange->local_experts()[s]):
//     for each entry i in [expert_offsets()[s], expert_offsets()[s+1]):
//       y = expert(received_row(entry_rows()[i]));
//       exchange->AddExpertOutput(i, y);        // combine_row(row) += entry_weights()[i] * y
//   exchange->Combine(out);                     // out[t] = sum over t's experts of w *
//   expert(x[t])
//
// Dispatch: a small all-to-all of per-rank row counts (plus a placement fingerprint and an error
// flag), then one all-to-all of rows. A token goes ONCE to each rank that owns any of its top-k
// experts, not once per expert; its row carries the ids and weights of the experts it wants on
// that rank. Received rows are indexed by local expert as a CSR (slot -> entries; an entry is a
// (received row, weight) pair), slots in the order of placement.local_experts(rank).
// Combine: each received row's combine_row -- the weighted sum over this rank's experts of that
// token -- goes back to the token's owner, which adds the contributions of all ranks. Sums run in
// a fixed order (a token's destination ranks in top-k order; entries in CSR order), so results
// are identical run to run.
//
// Lockstep: every rank calls Dispatch and then Combine for every layer, with n_tokens = 0 when it
// has nothing. Bad input on one rank (an expert id out of range, too many tokens), a different
// placement on some rank, or mismatched configs are reported by Dispatch/Create on EVERY rank (the
// counts exchange carries the verdict), so ranks fail together instead of hanging.
//
// Buffers are allocated once in Create, sized for the worst case (MoeExchangeSizes) and reused.
// Activations are float32; bf16 rows are a later addition to the row format.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/expert_placement.h"
#include "comm/host_buffer.h"
#include "comm/routing_stats.h"

namespace tritmoe {

class ThreadPool;

struct MoeExchangeConfig {
  int num_experts = 0;          // routed experts per layer (DeepSeek-V3: 256)
  int hidden = 0;               // hidden size (7168)
  int top_k = 0;                // experts per token (8)
  int max_tokens_per_rank = 0;  // most tokens any rank passes to one Dispatch
  int num_layers = 1;           // MoE layers, for routing statistics

  // Ranges; MoeExchange::Create also checks that every rank has the same config.
  absl::Status Validate() const;
};

// Every buffer size, derived in this one place from the config and the rank count.
struct MoeExchangeSizes {
  static MoeExchangeSizes Compute(const MoeExchangeConfig& config, int num_ranks);

  // A dispatched row: hidden float32, then top_k int32 expert ids (-1 = unused), then top_k
  // float32 weights; padded to 64 bytes so every row starts aligned.
  int64_t dispatch_row_bytes = 0;
  int64_t combine_row_bytes = 0;    // hidden float32
  int64_t max_dests_per_token = 0;  // min(top_k, num_ranks)
  int64_t max_send_rows = 0;        // max_tokens_per_rank * max_dests_per_token
  int64_t max_recv_rows = 0;        // max_tokens_per_rank * num_ranks (each peer, each token once)
  int64_t max_entries = 0;          // max_recv_rows * top_k (row, local expert) pairs

  // Bytes of the four row buffers (dispatch send/recv, combine send/recv). Reserved address space;
  // only pages a step touches are resident.
  int64_t buffer_bytes() const;
};

// Counters since creation (or ResetStats). Byte counts are payload; "sent"/"received" are to and
// from OTHER ranks (what crosses the interconnect); rows a rank sends to itself count as
// self_bytes.
struct MoeExchangeStats {
  int64_t dispatches = 0;
  int64_t combines = 0;
  int64_t dispatch_bytes_sent = 0;
  int64_t dispatch_bytes_received = 0;
  int64_t combine_bytes_sent = 0;
  int64_t combine_bytes_received = 0;
  int64_t self_bytes = 0;
  int64_t rows_sent = 0;      // (token, rank) pairs dispatched by this rank, self included
  int64_t rows_received = 0;  // rows this rank's experts received, self included
  // Tokens of THIS rank routed to each (layer, expert); RoutingStats::AllReduceSum gives the
  // job-wide histogram that ExpertPlacement::Balanced takes.
  RoutingStats routing;
};

class MoeExchange {
 public:
  // Collective over `comm` (every rank calls it): allocates the buffers and checks that every
  // rank passed the same config. `comm` (and `pool`, which may be null: then the calling thread
  // packs and reduces alone) must outlive the exchange.
  static absl::StatusOr<std::unique_ptr<MoeExchange>> Create(const MoeExchangeConfig& config,
                                                             Communicator* comm,
                                                             ThreadPool* pool = nullptr);

  // Sends this rank's tokens to their experts. Shapes: x [n_tokens][hidden], topk_ids and
  // topk_weights [n_tokens][top_k], row-major; 0 <= n_tokens <= max_tokens_per_rank. An expert
  // id of -1 marks an unused slot; any other id must be in [0, num_experts). `placement` must be
  // the same on every rank, with num_ranks == comm size and num_experts == config. `layer` in
  // [0, num_layers) only selects the routing-statistics row.
  absl::Status Dispatch(const ExpertPlacement& placement, int layer, int n_tokens,
                        std::span<const float> x, std::span<const int32_t> topk_ids,
                        std::span<const float> topk_weights);

  // ---- What the last Dispatch delivered to this rank (valid until the next Dispatch). ----
  // Global expert id of each local slot (placement.local_experts(rank)).
  std::span<const int> local_experts() const { return local_experts_; }
  // CSR over slots: entries of slot s are [expert_offsets()[s], expert_offsets()[s+1]).
  std::span<const int64_t> expert_offsets() const { return expert_offsets_; }
  std::span<const int32_t> entry_rows() const { return {entry_rows_.data(), num_entries_}; }
  std::span<const float> entry_weights() const { return {entry_weights_.data(), num_entries_}; }
  int64_t num_received_rows() const { return num_recv_rows_; }
  // Row `row`'s hidden state, [hidden] float32.
  std::span<const float> received_row(int64_t row) const;
  // Where row `row`'s output accumulates, [hidden] float32, zeroed by Dispatch. Experts may
  // write here directly (fused kernels) instead of calling AddExpertOutput.
  std::span<float> combine_row(int64_t row);
  // combine_row(entry_rows()[entry]) += entry_weights()[entry] * y, with y [hidden].
  void AddExpertOutput(int64_t entry, std::span<const float> y);

  // Returns the combined outputs: out [n_tokens][hidden] of the last Dispatch, overwritten with
  // the sum of the contributions of every rank (zero for a token with no experts). Collective.
  absl::Status Combine(std::span<float> out);

  const MoeExchangeConfig& config() const { return config_; }
  const MoeExchangeSizes& sizes() const { return sizes_; }
  const MoeExchangeStats& stats() const { return stats_; }
  void ResetStats();

 private:
  // Exchanged per peer before the rows: what a rank will send, and what it believes.
  struct Header {
    int64_t rows;          // rows for that peer; -1: this rank rejected its input
    uint64_t fingerprint;  // ExpertPlacement::fingerprint()
  };

  MoeExchange(const MoeExchangeConfig& config, Communicator* comm, ThreadPool* pool);
  absl::Status ValidateDispatch(const ExpertPlacement& placement, int layer, int n_tokens,
                                std::span<const float> x, std::span<const int32_t> topk_ids,
                                std::span<const float> topk_weights) const;
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  const MoeExchangeConfig config_;
  Communicator* const comm_;
  ThreadPool* const pool_;
  const MoeExchangeSizes sizes_;
  MoeExchangeStats stats_;

  HostBuffer dispatch_send_, dispatch_recv_, combine_send_, combine_recv_;

  // Per peer (size = ranks).
  std::vector<Header> send_headers_, recv_headers_;
  std::vector<int64_t> send_rows_, recv_rows_, send_row_offsets_, recv_row_offsets_;
  std::vector<int64_t> send_bytes_, send_displs_, recv_bytes_, recv_displs_;
  // Per token: its destination ranks in top-k order, and the send row going to each.
  std::vector<int32_t> token_dests_;  // [max_tokens][max_dests_per_token]
  std::vector<int32_t> token_rows_;   // [max_tokens][max_dests_per_token]
  std::vector<int32_t> token_num_dests_;
  std::vector<int32_t> send_row_token_;  // [max_send_rows]
  // Receive side CSR.
  std::vector<int> local_experts_;
  std::vector<int> slot_of_expert_;  // [num_experts], -1 when not local
  std::vector<int64_t> expert_offsets_;
  std::vector<int32_t> entry_rows_;
  std::vector<float> entry_weights_;
  size_t num_entries_ = 0;
  int64_t num_recv_rows_ = 0;
  int64_t num_send_rows_ = 0;
  int n_tokens_ = 0;
  bool dispatched_ = false;  // Dispatch done, Combine not yet
};

}  // namespace tritmoe
