// The engine: one model served by N ranks in lockstep. Rank 0 (the driver) decides every step;
// every rank executes it. Attention is data-parallel (each sequence and its KV cache live on one
// rank, its owner); routed experts are partitioned across ranks (ExpertPlacement) and reached
// through the MoE exchange inside Model::Step. Commands (generate, logits, bench-decode, serve)
// talk only to the driver's Engine; worker ranks sit in RunWorker.
//
//   // every rank:
//   ASSIGN_OR_RETURN(auto engine, Engine::Create(options, comm));
//   if (engine->is_driver()) {
//     EngineStep step;
//     step.start.push_back({.id = 7, .sampling = params, .capacity = 4096});
//     step.items.push_back({.id = 7, .tokens = prompt, .sample = true});
//     ASSIGN_OR_RETURN(EngineStepResult r, engine->Step(step));   // r.tokens[0]: first token
//     ...
//     RETURN_IF_ERROR(engine->Shutdown());                       // workers' RunWorker returns
//   } else {
//     RETURN_IF_ERROR(engine->RunWorker());
//   }
//
// Contracts:
//   * Step is collective: the driver broadcasts the step (a serialized EngineStep) and every rank
//     runs its owned items through Model::Step (with zero tokens when it owns none, still taking
//     part in every MoE exchange), samples its sequences with their own Sampler, and the sampled
//     tokens (and requested logits) are gathered back to the driver in item order.
//   * Placement of sequences: a new sequence goes to the rank with the fewest live sequences
//     (ties: lowest rank); it stays there until released. Results do not depend on placement:
//     greedy tokens and logits equal those of np=1 (within float reduction order: ~1e-6
//     relative; a lossy KV cache (f16, q8_0) can round a cached latent element differently after
//     such a difference, which shows as up to a few 1e-4 -- the model does the same when the
//     batch a sequence runs in changes).
//   * Errors: a bad step (unknown or duplicate id, a sequence out of room, bad sampling params) is
//     rejected by the driver before it is broadcast, with InvalidArgument naming the id, and the
//     engine stays usable. An error inside the collective (a rank failed) is fatal: the caller
//     must end the job (MpiSession::Abort); every rank reports it rather than hanging.
//   * Thread use: one thread calls Step (the server's scheduler thread); not reentrant.
//   * Self-measurement: every step result carries each rank's wall time split by phase
//     (StepPhaseTimes, gathered with the results at no extra collective), and
//     CollectRoutingStats sums the tokens routed to each (MoE layer, expert) over all ranks since
//     start -- the input of placement "balanced:<file>" (RoutingStats::Save writes that file);
//     CollectExpertCacheStats sums the expert caches' statistics over all ranks the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "comm/expert_placement.h"
#include "comm/routing_stats.h"
#include "runtime/model/model.h"
#include "runtime/model/model_config.h"
#include "runtime/store/cache_stats.h"
#include "runtime/text/sampler.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {

struct EngineOptions {
  std::string model_path;  // GGUF (any shard of a split set); same on every rank
  ModelOptions model;  // threads, kv_type, precision, ... (local_experts/exchange: set by Engine)
  // Expert placement: "contiguous" (default), "balanced:<routing-stats file>", or a placement file.
  std::string placement = "contiguous";
  int max_sequences = 64;          // live sequences job-wide
  int max_tokens_per_step = 2048;  // tokens of all items of one step, job-wide (sizes buffers)
  // Where each rank runs its model: "cpu" (runtime/model), "cuda" (runtime/gpu/gpu_model.h, on
  // the rank's local-rank GPU: one GPU per rank) or "cuda:N" (every rank of a host on GPU N; ranks
  // sharing a GPU each hold their own copy of the model there). With more than one rank the routed
  // experts are split over the GPUs through the exchange gpu_exchange names (every expert is
  // still uploaded to every GPU, only the local ones computed; with --expert-cache-mb and the
  // host exchange each rank's GPU cache holds the local experts it is sent rows for).
  // "cuda" rejects what only the CPU has (precision float, attention naive, an expert cache);
  // builds without CUDA reject it; a rank without its GPU fails at start (an agreed failure).
  // Greedy sequences are sampled on the GPU (only their tokens come back); other sampling, and
  // requested logits, copy n_vocab floats per row to the host.
  std::string device = "cpu";
  // --gpu-exchange: how GPU ranks exchange the routed experts' rows. "nccl": on device buffers
  // over NCCL (runtime/gpu/device_expert_exchange.h; CUDA graphs kept; one GPU per rank, so not
  // with cuda:N shared by several ranks of a host; with one rank: the exchange with itself, for
  // tests). "host": host-staged through the CPU exchange (MPI). Empty (default): nccl where the
  // job has several ranks, each on its own GPU (--device cuda) and NCCL is built, else host; one
  // rank alone needs no exchange. Only with --device cuda[:N].
  std::string gpu_exchange;
  // --device cuda: routed experts in a GPU expert cache of this many bytes, streamed from pinned
  // host memory (runtime/gpu/gpu_expert_cache.h; 0: all resident), and its next-layer prefetch.
  int64_t gpu_expert_cache_bytes = 0;
  bool gpu_expert_prefetch = false;
  // --device cpu with a CPU expert cache under model.expert_source (a CachedExpertSource): a
  // snapshot of its statistics, cumulative since start, for CollectExpertCacheStats. The engine
  // cannot ask the ExpertSource interface for them; ApplyExpertCacheFlags
  // (runtime/cli/engine_expert_cache.h) sets both. Empty: this rank has no CPU cache.
  std::function<ExpertCacheStats()> expert_cache_stats;

  absl::Status Validate() const;
  bool on_gpu() const { return device.rfind("cuda", 0) == 0; }
  // The CUDA device of a rank with this local rank: N of "cuda:N", else the local rank.
  // Requires on_gpu() and a validated device.
  int CudaDevice(int local_rank) const;
  // The exchange GPU ranks use in a job of n_ranks ranks, local_size of them on this host: "none"
  // (one rank, or not on the GPU), "host" or "nccl" (see gpu_exchange). Errors: nccl asked for
  // where it cannot run (ranks sharing a GPU, a build without NCCL).
  absl::StatusOr<std::string> GpuExchangeFor(int n_ranks, int local_size) const;
};

// Starts a sequence: allocates its KV cache on its owner rank and its sampler.
struct SequenceStart {
  uint64_t id = 0;          // chosen by the driver; unique among live sequences
  SamplingParams sampling;  // validated at Step
  int64_t capacity = 0;     // KV tokens to reserve (prompt + max new tokens); <= max_context()
};

// New tokens of one live sequence in one step.
struct EngineItem {
  uint64_t id = 0;
  std::vector<int32_t> tokens;                  // at least one; appended to the sequence's KV cache
  bool sample = true;                           // sample the next token after the last of `tokens`
  LogitsRequest logits = LogitsRequest::kNone;  // also return logits (logits command, tests)
};

struct EngineStep {
  std::vector<SequenceStart> start;  // created before the items run
  std::vector<EngineItem> items;     // distinct ids, each started now or earlier
  std::vector<uint64_t> release;     // freed after the items run (KV cache and sampler)
};

// One rank as seen at start-up (gathered, the same on every rank).
struct EngineRankInfo {
  int pid = 0;
  std::string host;
  std::string device;             // "cpu" or "cuda:<index> (<GPU name>)"
  int threads = 0;                // model threads of that rank
  int64_t replicated_bytes = 0;   // tensor bytes outside the routed experts
  int64_t expert_bytes = 0;       // its own routed experts, all MoE layers
  int64_t file_tensor_bytes = 0;  // every tensor of the file
  int num_local_experts = 0;      // experts it holds, summed over the MoE layers
};

// One rank's wall time in one step, by phase (seconds, steady clock, measured on that rank).
// The step on a rank runs from the moment it has the step message (the driver: after planning
// and broadcasting it) to just before its results go back to the driver; the phases partition
// that span:
//   attention_s    MLA attention of every layer (projections, RoPE, KV cache append, softmax)
//   moe_compute_s  the MoE layers' own compute: router, this rank's routed experts, shared expert
//   dispatch_s     ExpertExchange::Dispatch: routing its tokens' rows to the experts' ranks, incl.
//                  the all-to-alls and the time spent in them waiting for slower ranks to arrive
//   combine_s      ExpertExchange::Combine: expert outputs back to the tokens' ranks, weighted sum,
//                  incl. waiting in the all-to-all (for the slowest rank's experts)
//   other_s        everything else: embedding, norms, residual adds, dense FFN layers, lm_head,
//                  sampling, starting/releasing sequences
// With one rank there is no all-to-all: dispatch_s and combine_s are exactly 0 (the single-rank
// exchange's local copies count as moe_compute_s). A rank idle in a step (no sequences) still
// takes part in every MoE exchange, so its dispatch/combine time is mostly waiting. A model
// that does not split its step (the GPU model) reports it all as other_s.
struct StepPhaseTimes {
  double attention_s = 0, moe_compute_s = 0, dispatch_s = 0, combine_s = 0, other_s = 0;
  int64_t tokens = 0;  // new tokens of this rank's own sequences in the step

  double total_s() const { return attention_s + moe_compute_s + dispatch_s + combine_s + other_s; }
  StepPhaseTimes& operator+=(const StepPhaseTimes& o);
};

struct EngineStepResult {
  std::vector<int32_t> tokens;  // per item: the sampled token, or -1 when sample was false
  // Per item, the requested logits rows, n_vocab floats each (empty for kNone).
  std::vector<std::vector<float>> logits;
  std::vector<StepPhaseTimes> rank_times;  // [num_ranks()]: every step, indexed by rank
};

class Engine {
 public:
  // Collective: every rank loads the replicated tensors and only its own experts, and checks that
  // every rank opened the same model with the same options (a mismatch fails on every rank).
  // Failures found before or by that check (bad options, a file one rank cannot open, a
  // mismatch) are returned on EVERY rank, marked with IsAgreedFailure: no rank is left inside a
  // collective, so the job may end normally. Any other error must end the job (Abort).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                        Communicator* comm);
  virtual ~Engine() = default;

  bool is_driver() const { return rank() == 0; }
  virtual int rank() const = 0;
  virtual int num_ranks() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
  virtual int64_t max_context() const = 0;
  // Bytes of the model file this rank has mapped for its weights (replicated + own experts).
  virtual int64_t weight_bytes_loaded() const = 0;
  // Every rank's start-up facts, indexed by rank (for the start-up report and tests).
  virtual const std::vector<EngineRankInfo>& ranks() const = 0;
  // Model threads of this rank (options.model.threads, or when 0: max(1, cores / ranks on this
  // host), so that oversubscribed ranks share the cores instead of fighting over them).
  virtual int threads() const = 0;

  // Driver only: runs one step on every rank (see the contracts above).
  virtual absl::StatusOr<EngineStepResult> Step(const EngineStep& step) = 0;
  // Driver only, collective (the workers take part through the step protocol, between steps):
  // tokens routed to each (MoE layer, expert) since the engine started, summed over all ranks --
  // each of a token's top-k choices counts once. Row l is model layer config().n_dense_lead + l.
  // FailedPrecondition for a model without MoE layers. Cost: one all-reduce of
  // n_moe_layers x n_expert int64 (DeepSeek-V3: 58 x 256 x 8 B = 119 KB).
  virtual absl::StatusOr<RoutingStats> CollectRoutingStats() {
    return absl::UnimplementedError("this engine records no routing statistics");
  }
  // Whether CollectRoutingStats has statistics to give: the CPU exchange and the host-staged GPU
  // exchange record them; one rank without an exchange and the NCCL exchange do not.
  virtual bool records_routing_stats() const { return false; }
  // The expert placement in use, one per MoE layer (empty for a model without MoE layers); with
  // CollectRoutingStats, input to LayerLoadImbalance (runtime/engine/expert_load.h).
  virtual std::vector<ExpertPlacement> expert_placements() const { return {}; }
  // Driver only, collective like CollectRoutingStats (between steps): the expert caches'
  // statistics since the engine started, summed over the ranks per MoE layer -- each rank's CPU
  // cache (EngineOptions::expert_cache_stats) or the GPU cache of the one --device cuda rank
  // (EngineOptions::gpu_expert_cache_bytes). nullopt when no rank has a cache.
  // What the sums mean: a rank caches only its own experts, so a layer's hits + misses count the
  // distinct (step, expert) pairs the job's steps asked for in that layer (what one process asks);
  // a layer's tokens are each rank's own tokens through it, summed: the job's tokens, so
  // bytes_per_token() = bytes read by every rank / tokens of the steps' batches. budget,
  // slots_per_layer, capacity and resident bytes are summed too (the job's slots per layer, to
  // set against n_expert); prefetch: any rank's. stall_s is the ranks' stall time added up.
  // layers[i].layer = config().n_dense_lead + i, every MoE layer present.
  // Cost: one all-reduce of 6 + 9 x n_moe_layers int64 (stall in nanoseconds).
  virtual absl::StatusOr<std::optional<ExpertCacheStats>> CollectExpertCacheStats() {
    return std::optional<ExpertCacheStats>();
  }

  // Driver only: ends every worker's RunWorker with OK. Idempotent.
  virtual absl::Status Shutdown() = 0;
  // Workers only: executes the driver's steps until Shutdown (OK) or a failure (error).
  virtual absl::Status RunWorker() = 0;
};

// True for an error that every rank of the job returned at the same point (see Engine::Create).
bool IsAgreedFailure(const absl::Status& status);

}  // namespace tritmoe
