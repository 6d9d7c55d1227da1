// Expert parallelism over GPUs on device buffers: the dispatch and combine of one MoE layer as
// collectives enqueued on the model's stream (DeviceCollectives: NCCL grouped sends / receives),
// so that a decode step stays one CUDA graph with no host synchronization inside a layer.
//
// Per step (host, once): BeginStep gathers every rank's token count T_r over the host
// communicator (one small all-gather); every size below follows from that vector, which the
// model also keys its CUDA graphs on.
// Per MoE layer (device, on the caller's stream):
//   Dispatch: every rank sends its T_r tokens' activation rows (the int8 records the grouped GEMV
//     consumes, or float rows for float experts) and routing (top-k experts and weights) to every
//     rank. With k = 8 of 256 experts a token reaches most of 2-8 ranks anyway, so this costs
//     little over a deduplicated all-to-all and needs no device-side counts (NCCL sizes must be
//     known on the host). Then, on the device: the choices this rank serves (its experts of the
//     layer; replicas split by token) grouped by expert into the CSR the grouped GEMVs take, over
//     all received tokens.
//   (the caller runs the grouped gate ‖ up, SwiGLU and down GEMVs over Received)
//   Combine: per received token, the partial sum over the choices served here (slots in top-k
//     order, weights from the received routing); each origin rank gets its tokens' partials back
//     (an all-to-all of float rows) and adds them in rank order, then the shared expert and the
//     residual: x += (p_0 + p_1 + ...) + shared.
// With one rank the sums are in the resident path's order: logits are bit-identical to it.
//
// Buffers are sized in Reserve (called by BeginStep) and grow, never shrink; growth changes the
// device pointers (BeginStep says so: captured graphs must then be dropped).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "experts/cuda/device_buffer.h"
#include "runtime/gpu/device_collectives.h"

namespace tritmoe::gpu {

// Who serves each expert of one MoE layer: expert e is held by ranks
// replica_ranks[replica_offsets[e] .. replica_offsets[e + 1]) (at least one), and a token's
// choice of e goes to copy (g mod copies), g = the token's index among all ranks' tokens of the
// step (rank order).
struct DeviceExchangeLayer {
  std::vector<int32_t> replica_offsets;  // [n_expert + 1]
  std::vector<int32_t> replica_ranks;
};

struct DeviceExchangeConfig {
  int n_expert = 0;
  int k = 0;                                // experts per token
  int64_t n_embd = 0;                       // row width of h and of the expert outputs
  int64_t max_ff = 0;                       // widest expert FFN (gate ‖ up has 2 * max_ff rows)
  std::vector<DeviceExchangeLayer> layers;  // one per MoE layer, in layer order

  // Every layer's table over n_expert experts, every expert held by >= 1 rank in [0, n_ranks).
  absl::Status Validate(int n_ranks) const;
};

// This rank's view of one layer's received tokens, valid until the next Dispatch.
struct ExchangeReceived {
  int64_t n_tokens = 0;                 // all ranks' tokens this step (sum of T_r)
  const void* rows = nullptr;           // [n_tokens][row_bytes]: records or floats, as sent
  const int32_t* offsets = nullptr;     // [n_expert + 2]: expert e's pairs; n_expert: not served
  const int32_t* pair_token = nullptr;  // [n_tokens * k]: each pair's received token
  // Workspace for the caller's expert GEMVs, sized for n_tokens * k pairs.
  float* gu = nullptr;     // [pairs][2 * max_ff]
  float* act = nullptr;    // [pairs][max_ff] (SwiGLU output, float kernels)
  void* act_ws = nullptr;  // quantized activations of [pairs][max(n_embd, max_ff)]
  int64_t act_ws_bytes = 0;
  float* y = nullptr;  // [pairs][n_embd]: the experts' outputs, read by Combine
};

class DeviceExpertExchange {
 public:
  // host: the ranks' host communicator (token counts); device: the same ranks' device
  // collectives (same rank order). Neither owned; both must outlive the exchange.
  static absl::StatusOr<std::unique_ptr<DeviceExpertExchange>> Create(
      const DeviceExchangeConfig& config, Communicator* host, DeviceCollectives* device);

  int rank() const { return device_->rank(); }
  int size() const { return device_->size(); }
  int n_moe_layers() const { return static_cast<int>(config_.layers.size()); }
  const DeviceExchangeConfig& config() const { return config_; }

  // Collective (host), once per step on every rank, before any Dispatch of the step: every rank's
  // token count. Then Reserve for it. Returns whether the buffers moved.
  absl::StatusOr<bool> BeginStep(int tokens);
  std::span<const int32_t> step_tokens() const { return tokens_; }
  int64_t step_total() const { return total_; }

  // Enqueues MoE layer `moe_layer`'s dispatch: rows (this rank's [T][row_bytes], row_bytes <=
  // 4 * n_embd), experts and weights ([T][k]) to every rank, then the CSR of the choices served
  // here. Rows may be null when T = 0.
  absl::StatusOr<ExchangeReceived> Dispatch(int moe_layer, const void* rows, int64_t row_bytes,
                                            const int32_t* experts, const float* weights,
                                            cudaStream_t stream);
  // Enqueues the combine of the last Dispatch, the experts' outputs in Received::y:
  // x[t] += (sum of the ranks' partials, rank order) + shared[t] for this rank's T tokens.
  // shared may be null.
  absl::Status Combine(float* x, const float* shared, cudaStream_t stream);

 private:
  DeviceExpertExchange() = default;
  bool Reserve();

  DeviceExchangeConfig config_;
  Communicator* host_ = nullptr;
  DeviceCollectives* device_ = nullptr;
  std::vector<DeviceBuffer> replica_offsets_, replica_ranks_;  // per MoE layer
  std::vector<int32_t> tokens_;                                // this step's T_r
  std::vector<int64_t> prefix_;                                // [size + 1]: first token of rank r
  int64_t total_ = 0;
  // Capacities (tokens) of the buffers, and the buffers (one allocation each).
  int64_t cap_total_ = -1, cap_mine_ = -1;
  DeviceBuffer rows_, experts_, weights_, masked_, offsets_, pair_token_, slot_pair_;
  DeviceBuffer gu_, act_, act_ws_, y_, partial_, parts_;
  int64_t act_ws_bytes_ = 0;
};

}  // namespace tritmoe::gpu
