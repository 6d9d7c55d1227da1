// A loaded DeepSeek-V3/R1 ("deepseek2") model and its batched forward pass on the CPU.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(path, options));
//   ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, model->NewKvCache());
//   std::vector<int32_t> prompt = {...};
//   StepOutput out;
//   RETURN_IF_ERROR(model->Step({{cache.get(), prompt, LogitsRequest::kLast}}, &out));
//   // out.Row(0, 0) -> n_vocab logits after the prompt; then decode one token at a time:
//   int32_t next = ...;
//   RETURN_IF_ERROR(model->Step({{cache.get(), {&next, 1}, LogitsRequest::kLast}}, &out));
//
// A step runs the new tokens of all its sequences together through every layer: one MatMul per
// weight over all tokens of the step, so every weight is read once per step. Sequences in a step
// may mix prefill (many tokens) and decode (one token).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/thread_pool.h"
#include "experts/matmul.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/attention.h"
#include "runtime/model/expert_exchange.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/model_config.h"
#include "runtime/model/step_times.h"
#include "runtime/model/weights.h"
#include "runtime/model/workspace.h"

namespace tritmoe {

class ExpertSource;  // runtime/model/moe.h

struct ModelOptions {
  int threads = 0;  // 0: DefaultThreadCount()
  // kQuantized: activations quantized for the dot products, as llama.cpp's CPU backend (fast);
  // kFloat: weights decoded to float (the reference path).
  ActPrecision precision = ActPrecision::kQuantized;
  KvCacheType kv_type = KvCacheType::kF16;
  int64_t max_context = 0;  // largest KV cache a sequence may get; 0: the file's context_length
  AttentionForm attention = AttentionForm::kAuto;
  // Routed experts this process computes (one flag per expert); empty = all. Non-local experts
  // are never read; their tokens must be handled by `exchange`.
  std::vector<bool> local_experts;
  // Dispatch/combine of the MoE layers; nullptr: a LocalExpertExchange owned by the model.
  // Not owned; must outlive the model.
  ExpertExchange* exchange = nullptr;
  // Where the MoE layers get their routed experts' weights (runtime/model/moe.h); nullptr: in
  // place from the mapped file. Not owned; must outlive the model; Load attaches it.
  ExpertSource* expert_source = nullptr;
  // With no expert_source and quantized activations: copy the local routed experts whose type has
  // a faster CPU layout into it at load (RepackedExpertSource: IQ1_S, TQ1_0 on AVX-512; lossless,
  // +22-28% of their bytes in RAM). Off: read them in place from the mapped file.
  bool repack_experts = true;
  // Where each Step writes its wall time by part (overwritten per successful Step); nullptr: not
  // measured. Not owned; must outlive the model.
  ModelStepTimes* step_times = nullptr;

  absl::Status Validate() const;
};

enum class LogitsRequest {
  kNone,  // no logits (e.g. a prefill chunk that is not the last)
  kLast,  // after the last new token
  kAll,   // after every new token
};

// One sequence's part of a step.
struct SequenceInput {
  KvCache* cache = nullptr;         // from Model::NewKvCache; new tokens go at cache->size()...
  std::span<const int32_t> tokens;  // at least one
  LogitsRequest logits = LogitsRequest::kLast;
};

struct StepOutput {
  int64_t n_vocab = 0;
  std::vector<float> logits;       // [n_logit_rows][n_vocab]
  std::vector<int64_t> first_row;  // per sequence: its first logits row
  std::vector<int64_t> n_rows;     // per sequence: 0, 1 or its number of new tokens

  // Logits row i (0 <= i < n_rows[seq]) of sequence seq: n_vocab floats.
  const float* Row(size_t seq, int64_t i) const {
    return logits.data() + (first_row[seq] + i) * n_vocab;
  }
};

class Model {
 public:
  // Opens the GGUF (one file or any shard of a split set), reads and validates the config, binds
  // every tensor. The file stays memory-mapped for the model's lifetime.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path,
                                                     const ModelOptions& options);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  const gguf::GgufModel& gguf() const { return *gguf_; }  // tokenizer and other metadata
  const Weights& weights() const { return weights_; }
  int64_t n_vocab() const { return config_.n_vocab; }
  int64_t max_context() const { return max_context_; }

  // A KV cache for one sequence, of options.kv_type, holding up to `capacity` tokens
  // (0: max_context()). InvalidArgument above max_context().
  absl::StatusOr<std::unique_ptr<KvCache>> NewKvCache(int64_t capacity = 0) const;

  // Runs one step over `batch` (distinct caches). On success each cache has grown by its
  // sequence's tokens and *out holds the requested logits in batch order. Errors (bad token id,
  // empty token list, a cache from another model or shared by two sequences, a cache without
  // room) are found before any work, and leave every cache unchanged. Not reentrant.
  absl::Status Step(std::span<const SequenceInput> batch, StepOutput* out);
  absl::Status Step(std::initializer_list<SequenceInput> batch, StepOutput* out) {
    return Step(std::span<const SequenceInput>(batch.begin(), batch.size()), out);
  }

 private:
  Model() = default;
  absl::Status CheckBatch(std::span<const SequenceInput> batch) const;

  ModelOptions options_;
  std::unique_ptr<gguf::GgufModel> gguf_;
  ModelConfig config_;
  Weights weights_;
  int64_t max_context_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ExpertSource> owned_source_;  // the RepackedExpertSource, when Load made one
  std::unique_ptr<ExpertExchange> local_exchange_;
  ExpertExchange* exchange_ = nullptr;
  Workspace ws_;  // temporaries of Step, reused across steps
};

}  // namespace tritmoe
