// tritmoe bench-decode: prefill and batched-decode throughput of the model on this process, with
// the weight bytes each token has to read and the bandwidth that implies.
//
// Prefill: one sequence of --prompt tokens in one step. Decode at batch B: B sequences, each
// prefilled with --context tokens, then --tokens steps of one token per sequence (greedy, fed
// back). Every measurement is repeated --reps times on fresh caches; the median is reported.
//
// Weight bytes per decode step: every tensor outside the routed experts (token_embd only one row
// per token), plus, per MoE layer, the distinct routed experts the step's B tokens select. With
// random weights routing is close to uniform, so the distinct count is taken as its expectation
// E * (1 - (1 - k/E)^B); the figure is labelled as such.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/model/model.h"

namespace tritmoe {
namespace {

struct BenchDecodeArgs {
  std::string model;
  int threads = 0;
  std::string kv_type = "f16";
  std::string batches = "1,16";
  int prompt = 128;
  int context = 16;
  int tokens = 16;
  int reps = 5;
};

int64_t ViewBytes(const WeightView& w) {
  return w.data == nullptr ? 0 : w.rows * RowBytes(w.type, w.cols);
}
int64_t StackBytes(const MatrixStack& s) {
  return s.data == nullptr ? 0 : s.count * s.matrix_bytes();
}
int64_t FfnBytes(const FfnWeights& f) {
  return ViewBytes(f.gate) + ViewBytes(f.up) + ViewBytes(f.down);
}

// Bytes of weights one step reads apart from the routed experts, and one routed expert's bytes
// summed over the MoE layers (gate + up + down).
struct WeightBytes {
  int64_t dense_per_step = 0;     // attention, dense FFNs, shared experts, routers, lm_head
  int64_t embd_row = 0;           // one token_embd row (read per token)
  int64_t expert_all_layers = 0;  // one routed expert in every MoE layer
  int n_moe_layers = 0;
};

WeightBytes CountWeightBytes(const Model& model) {
  const ModelConfig& c = model.config();
  const Weights& w = model.weights();
  WeightBytes b;
  b.embd_row = RowBytes(w.token_embd().type, w.token_embd().cols);
  b.dense_per_step += ViewBytes(w.output());
  for (int il = 0; il < c.n_layer; ++il) {
    const LayerWeights& l = w.layer(il);
    b.dense_per_step += ViewBytes(l.attn_q_a) + ViewBytes(l.attn_q_b) + ViewBytes(l.attn_q) +
                        ViewBytes(l.attn_kv_a_mqa) + StackBytes(l.attn_k) + StackBytes(l.attn_v) +
                        ViewBytes(l.attn_output) + FfnBytes(l.dense) + ViewBytes(l.ffn_gate_inp) +
                        FfnBytes(l.shared);
    if (c.IsMoeLayer(il)) {
      ++b.n_moe_layers;
      b.expert_all_layers +=
          l.gate_exps.matrix_bytes() + l.up_exps.matrix_bytes() + l.down_exps.matrix_bytes();
    }
  }
  return b;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// Deterministic, in-vocabulary prompt tokens (no tokenizer needed).
std::vector<int32_t> PromptTokens(int n, int64_t n_vocab, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>((1000003LL * (i + 1) + 7919LL * salt) % n_vocab);
  return t;
}

absl::StatusOr<double> TimePrefill(Model& model, int prompt) {
  using Clock = std::chrono::steady_clock;
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, model.NewKvCache(prompt));
  std::vector<int32_t> tokens = PromptTokens(prompt, model.n_vocab(), 0);
  StepOutput out;
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(model.Step({{cache.get(), tokens, LogitsRequest::kLast}}, &out));
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Seconds for `steps` decode steps of `batch` sequences (after their prefill, untimed).
absl::StatusOr<double> TimeDecode(Model& model, int batch, int context, int steps) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::unique_ptr<KvCache>> caches(batch);
  std::vector<int32_t> next(batch);
  StepOutput out;
  for (int s = 0; s < batch; ++s) {
    ASSIGN_OR_RETURN(caches[s], model.NewKvCache(context + steps));
  }
  {
    std::vector<std::vector<int32_t>> prompts(batch);
    std::vector<SequenceInput> in(batch);
    for (int s = 0; s < batch; ++s) {
      prompts[s] = PromptTokens(context, model.n_vocab(), s + 1);
      in[s] = {caches[s].get(), prompts[s], LogitsRequest::kLast};
    }
    RETURN_IF_ERROR(model.Step(in, &out));
    for (int s = 0; s < batch; ++s) next[s] = Argmax(out.Row(s, 0), out.n_vocab);
  }
  std::vector<SequenceInput> in(batch);
  const auto t0 = Clock::now();
  for (int step = 0; step < steps; ++step) {
    for (int s = 0; s < batch; ++s) in[s] = {caches[s].get(), {&next[s], 1}, LogitsRequest::kLast};
    RETURN_IF_ERROR(model.Step(in, &out));
    for (int s = 0; s < batch; ++s) next[s] = Argmax(out.Row(s, 0), out.n_vocab);
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

absl::Status RunBenchDecode(const BenchDecodeArgs& a) {
  if (a.prompt < 1 || a.context < 1 || a.tokens < 1 || a.reps < 1) {
    return absl::InvalidArgumentError("--prompt, --context, --tokens and --reps must be >= 1");
  }
  std::vector<int> batches;
  for (absl::string_view part : absl::StrSplit(a.batches, ',')) {
    int b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batch: '", part, "' is not a positive integer"));
    }
    batches.push_back(b);
  }
  ModelOptions options;
  options.threads = a.threads;
  ASSIGN_OR_RETURN(options.kv_type, ParseKvCacheType(a.kv_type));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(a.model, options));
  const ModelConfig& c = model->config();
  const WeightBytes wb = CountWeightBytes(*model);
  std::printf("model: %s\n", a.model.c_str());
  std::printf("threads: %d, kv cache: %s, reps: %d (median)\n",
              options.threads > 0 ? options.threads : DefaultThreadCount(), a.kv_type.c_str(),
              a.reps);
  std::printf(
      "weights: %.1f MB outside routed experts, %.2f MB per routed expert (all %d MoE "
      "layers), %d of %d experts per token\n",
      wb.dense_per_step / 1e6, wb.expert_all_layers / 1e6, wb.n_moe_layers, c.n_expert_used,
      c.n_expert);

  std::vector<double> prefill_s;
  for (int r = 0; r < a.reps; ++r) {
    ASSIGN_OR_RETURN(double s, TimePrefill(*model, a.prompt));
    prefill_s.push_back(s);
  }
  const double pf = Median(prefill_s);
  std::printf("\n| phase | batch | tokens | tok/s | weight MB/step | GB/s implied |\n");
  std::printf("|---|---|---|---|---|---|\n");
  {
    // A prefill step of P tokens reads every expert any token picks: ~all of them when P is large.
    const double distinct =
        c.n_expert * (1.0 - std::pow(1.0 - double(c.n_expert_used) / c.n_expert, a.prompt));
    const double bytes =
        wb.dense_per_step + a.prompt * wb.embd_row + distinct * wb.expert_all_layers;
    std::printf("| prefill | 1 | %d | %.1f | %.1f | %.2f |\n", a.prompt, a.prompt / pf, bytes / 1e6,
                bytes / pf / 1e9);
  }
  for (int b : batches) {
    std::vector<double> secs;
    for (int r = 0; r < a.reps; ++r) {
      ASSIGN_OR_RETURN(double s, TimeDecode(*model, b, a.context, a.tokens));
      secs.push_back(s);
    }
    const double step_s = Median(secs) / a.tokens;
    const double distinct =
        c.n_expert * (1.0 - std::pow(1.0 - double(c.n_expert_used) / c.n_expert, b));
    const double bytes = wb.dense_per_step + b * wb.embd_row + distinct * wb.expert_all_layers;
    std::printf("| decode | %d | %d | %.1f | %.1f | %.2f |\n", b, a.tokens, b / step_s, bytes / 1e6,
                bytes / step_s / 1e9);
  }
  std::printf(
      "\nweight MB/step counts each distinct weight once per step; the routed experts "
      "a step reads are taken as their expectation under uniform routing.\n");
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchDecodeCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<BenchDecodeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-decode", "Prefill and batched decode throughput, with weight bytes per step");
  cmd->add_option("--model,-m", a->model, "GGUF model")->required();
  cmd->add_option("--threads,-t", a->threads, "CPU threads (0: all cores)");
  cmd->add_option("--kv-type", a->kv_type, "KV cache type: f16, q8_0, q4_0, f32")
      ->capture_default_str();
  cmd->add_option("--batch", a->batches, "Decode batch sizes, comma-separated")
      ->capture_default_str();
  cmd->add_option("--prompt", a->prompt, "Prefill length (tokens)")->capture_default_str();
  cmd->add_option("--context", a->context, "Tokens each decode sequence starts with")
      ->capture_default_str();
  cmd->add_option("--tokens", a->tokens, "Decode steps per measurement")->capture_default_str();
  cmd->add_option("--reps", a->reps, "Repetitions (the median is reported)")->capture_default_str();
  cmd->callback([a, result] { *result = RunBenchDecode(*a); });
}

}  // namespace tritmoe
