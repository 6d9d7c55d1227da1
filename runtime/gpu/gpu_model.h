// The DeepSeek-V3/R1 ("deepseek2") forward pass on one GPU: the twin of runtime/model/model.h with
// the same Step contract (a batch of sequences, each with its own KV cache, prefill and decode
// mixed), the weights and KV caches in device memory, and every op a CUDA kernel:
//
//   embed -> per layer: RMSNorm -> MLA (absorbed, over the latent cache) -> + residual
//                       -> RMSNorm -> dense SwiGLU FFN | MoE (router, grouped experts, shared
//                          expert, combine) -> + residual
//         -> RMSNorm -> lm_head -> logits (to the host) or greedy tokens (argmax on the GPU)
//
// Attention runs in the absorbed form for every sequence (decode and prefill; the naive form is
// not implemented on the GPU). Quantized weights go through the int8 tile kernels (activations
// quantized per 256 columns, like llama.cpp's Q8_K); F16/F32/BF16/Q8_0 with widths the tile
// kernels do not take through the float kernels (gpu_linear.h).
//
// Decode steps (one new token per sequence) are captured in a CUDA graph per (batch size, KV
// length bucket, logits rows) and replayed; the step's tokens and positions reach the graph
// through fixed device buffers. Plain C++ header (no CUDA types): builds without CUDA link
// gpu_model_stub.cc, whose Load returns Unimplemented.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model.h"
#include "runtime/model/model_config.h"
#include "runtime/store/cache_stats.h"

namespace tritmoe::gpu {

class GpuKvCache;
class DeviceExpertExchange;

struct GpuModelOptions {
  int device = 0;  // CUDA device index
  KvCacheType kv_type = KvCacheType::kF16;
  // Largest KV cache a sequence may get (and the RoPE table's length); 0: the file's
  // context_length.
  int64_t max_context = 0;
  int threads = 0;  // host threads for repacking weights at load; 0: DefaultThreadCount()
  bool cuda_graphs = true;
  // Fused small ops (RMSNorm + the next GEMV's activation quantization, residual add + RMSNorm,
  // SwiGLU + quantization, routing + grouping): bit-identical results, fewer launches. Off only
  // to measure what fusion gains.
  bool fuse_small_ops = true;
  // Routed experts held in a bounded GPU expert cache (gpu_expert_cache.h) of this many bytes
  // (slots per MoE layer = budget / one expert of every MoE layer, at least 1), filled from
  // pinned host memory; decode steps then run eagerly (no CUDA graphs). 0, or a budget that holds
  // every expert: all experts resident on the device. Results are bit-identical either way.
  int64_t expert_cache_bytes = 0;
  // With a cache: the next MoE layer's router applied to the current layer's input predicts its
  // experts, copied ahead of use.
  bool expert_prefetch = false;
  // With a cache: misses computed on the host CPU (SwiGLU over the file's expert bytes, Q8_K
  // activations: the same integers as the GPU's, float sums in another order, ~1e-7 relative)
  // instead of copied, in steps of at most kMaxCpuExpertTokens tokens. 0 off; 1 where a cost model
  // measured at load says the CPU finishes before the copies it saves (Fiddler's split); 2 every
  // miss (tests).
  int expert_cpu = 0;
  static constexpr int kMaxCpuExpertTokens = 16;
  // Expert parallelism (host-staged): the routed experts of every MoE layer go through this
  // exchange, as in the CPU model (runtime/model/moe.cc): routing and the layer input h are copied
  // to the host, Dispatch, the rows received for local experts uploaded and run through the
  // grouped GEMVs, outputs copied back, Combine, the weighted sum uploaded and combined with the
  // shared expert and the residual. Steps then run eagerly (no CUDA graphs), and a step with an
  // empty batch still runs every MoE layer's Dispatch / experts / Combine (zero own tokens, rows
  // from the other ranks). Not owned; must outlive the model. nullptr: every expert local (no
  // exchange). With an expert cache, the received rows' experts go through it in rounds (as
  // without an exchange); expert_prefetch and expert_cpu are not implemented with an exchange.
  ExpertExchange* exchange = nullptr;
  // With an exchange: the experts this rank computes (one flag per expert; empty = all). Rows
  // dispatched to an expert outside it are an error. Every expert is still uploaded.
  std::vector<bool> local_experts;

  absl::Status Validate() const;
};

// One sequence's part of a step (as SequenceInput, with a device cache).
struct GpuSequenceInput {
  GpuKvCache* cache = nullptr;
  std::span<const int32_t> tokens;
  LogitsRequest logits = LogitsRequest::kLast;
  // StepGreedy: a token the argmax skips (EOS under ignore_eos), -1 for none.
  int32_t argmax_exclude = -1;
};

// Bytes of weights on the device, by role, for bandwidth figures (averages over the layers of a
// kind), and what one step reads.
struct GpuWeightBytes {
  int64_t attn_per_layer = 0;       // attention of one layer
  int64_t dense_ffn_per_layer = 0;  // the FFN of one dense layer
  int64_t moe_fixed_per_layer = 0;  // router + shared expert of one MoE layer
  int64_t expert_per_layer = 0;     // one routed expert (gate, up, down) of one MoE layer
  int64_t head = 0;                 // lm_head
  int64_t embd_row = 0;             // one token_embd row
  int n_dense_layers = 0, n_moe_layers = 0;
  int64_t total = 0;  // everything on the device

  // Bytes a step of `tokens` tokens reads from a model of n_dense + n_moe layers when
  // `experts` distinct routed experts are active per MoE layer (each weight read once).
  double StepBytes(int n_dense, int n_moe, int tokens, double experts) const {
    return double(head) + double(tokens) * embd_row + double(n_dense + n_moe) * attn_per_layer +
           double(n_dense) * dense_ffn_per_layer +
           double(n_moe) * (moe_fixed_per_layer + experts * expert_per_layer);
  }
};

// Time spent per part of one step, from CUDA events between the parts (bench-gpu-decode).
struct StepProfile {
  double embed_ms = 0;
  std::vector<double> layer_ms;  // per layer
  double head_ms = 0;            // output norm, lm_head, sampling
  // Every op of every layer (a product includes its activation quantization), in order.
  struct Op {
    std::string name;
    int layer = 0;
    double ms = 0;
  };
  std::vector<Op> ops;
  bool graph = false;  // timed inside a CUDA graph (else eager launches)
};

class GpuModel {
 public:
  static absl::StatusOr<std::unique_ptr<GpuModel>> Load(const std::string& path,
                                                        const GpuModelOptions& options);
  ~GpuModel();

  const ModelConfig& config() const;
  const GpuModelOptions& options() const;
  const gguf::GgufModel& gguf() const;
  int64_t n_vocab() const;
  int64_t max_context() const;
  GpuWeightBytes weight_bytes() const;  // total: on the device (cached experts excluded)
  // The expert cache's statistics (cache_stats.h), or nullopt when every expert is resident.
  std::optional<ExpertCacheStats> expert_cache_stats() const;
  void ResetExpertCacheStats();
  // expert_cpu: the experts computed on the host since ResetExpertCacheStats (not in the cache's
  // requests), and the cost model: one expert on the host for 1 and 8 tokens, one copy (us).
  int64_t expert_cpu_count() const;
  std::array<double, 3> expert_cpu_cost_us() const;

  // Expert parallelism on device buffers (device_expert_exchange.h): from the next step on, every
  // MoE layer's routed experts go through `exchange` (dispatch / combine as collectives on the
  // model's stream; decode steps stay CUDA graphs, keyed also on every rank's token count), and a
  // step with an empty batch takes part in every MoE layer's exchange. Every rank of the exchange
  // must step in lockstep. Not owned; must outlive the model, and so must its communicator: the
  // model's graphs hold NCCL work, and ncclCommDestroy waits for them to be destroyed. Rejected
  // with options.exchange (the host-staged exchange) or an expert cache, or a table for another
  // layer / expert count.
  absl::Status AttachDeviceExchange(DeviceExpertExchange* exchange);

  // A device KV cache of options.kv_type for up to `capacity` tokens (0: max_context()).
  absl::StatusOr<std::unique_ptr<GpuKvCache>> NewKvCache(int64_t capacity = 0) const;

  // As Model::Step: logits of the requested rows to the host. Errors are found before any work
  // and leave every cache unchanged. An empty batch is valid only with options.exchange: it runs
  // just the MoE layers' exchange (this rank's experts serve the other ranks' rows).
  absl::Status Step(std::span<const GpuSequenceInput> batch, StepOutput* out);
  absl::Status Step(std::initializer_list<GpuSequenceInput> batch, StepOutput* out) {
    return Step(std::span<const GpuSequenceInput>(batch.begin(), batch.size()), out);
  }

  // Greedy step: each sequence asks for LogitsRequest::kLast (next[s] = argmax of its logits other
  // than its argmax_exclude, first maximum on ties, computed on the GPU: only the tokens come
  // back) or kNone (a prefill chunk: next[s] = -1). Decode batches replay CUDA graphs.
  absl::Status StepGreedy(std::span<const GpuSequenceInput> batch, std::vector<int32_t>* next);

  // Runs one step like StepGreedy, timing its parts with events recorded inside a CUDA graph
  // (eager launches if capture fails).
  absl::Status ProfileStep(std::span<const GpuSequenceInput> batch, std::vector<int32_t>* next,
                           StepProfile* profile);

  class Impl;

 private:
  explicit GpuModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tritmoe::gpu
