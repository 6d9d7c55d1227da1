// tritmoe generate: streams a completion (or, with --chat, an R1 chat reply) to stdout, then
// prints prompt and generation speed to stderr.
#include <chrono>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/model/model.h"
#include "runtime/model/vocab_loader.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/sampler.h"
#include "runtime/text/stop_checker.h"
#include "runtime/text/streaming_detokenizer.h"

namespace tritmoe {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  bool chat = false;
  int threads = 0;
  std::string kv_type = "f16";
  SamplingParams sampling;
  int n_predict = 128;
};

absl::Status RunGenerate(const GenerateArgs& a) {
  using Clock = std::chrono::steady_clock;
  ModelOptions options;
  options.threads = a.threads;
  ASSIGN_OR_RETURN(options.kv_type, ParseKvCacheType(a.kv_type));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(a.model, options));
  ASSIGN_OR_RETURN(Tokenizer tokenizer, LoadTokenizer(model->gguf()));
  if (tokenizer.n_vocab() != model->n_vocab()) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.model, ": tokenizer has ", tokenizer.n_vocab(), " tokens, the model ",
                     model->n_vocab()));
  }
  std::vector<int32_t> prompt;
  if (a.chat) {
    ASSIGN_OR_RETURN(ChatPrompt chat, RenderR1ChatPrompt({ChatMessage{"user", a.prompt}}));
    ASSIGN_OR_RETURN(prompt, EncodeChatPrompt(tokenizer, chat));
  } else {
    ASSIGN_OR_RETURN(prompt, tokenizer.Encode(a.prompt, tokenizer.add_bos(), false));
  }
  if (prompt.empty()) return absl::InvalidArgumentError("--prompt encodes to no tokens");
  SamplingParams params = a.sampling;
  params.max_tokens = a.n_predict;
  ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(params, model->n_vocab(), tokenizer.eos_id()));
  StopChecker stops(params, tokenizer.eos_id());
  StreamingDetokenizer detok(tokenizer);
  const int64_t capacity = std::min<int64_t>(model->max_context(),
                                             static_cast<int64_t>(prompt.size()) + a.n_predict);
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, model->NewKvCache(capacity));

  StepOutput out;
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(model->Step({{cache.get(), prompt, LogitsRequest::kLast}}, &out));
  const auto t1 = Clock::now();
  int n_generated = 0;
  while (true) {
    ASSIGN_OR_RETURN(int32_t next,
                     sampler.Sample(absl::MakeConstSpan(out.Row(0, 0), out.n_vocab), n_generated));
    ++n_generated;
    ASSIGN_OR_RETURN(std::string piece, detok.Push(next));
    StopChecker::Step step = stops.Push(next, piece);
    std::fwrite(step.text.data(), 1, step.text.size(), stdout);
    std::fflush(stdout);
    if (step.finish != FinishReason::kNone) break;
    if (cache->size() >= capacity) {
      std::string rest = stops.Flush();
      std::fwrite(rest.data(), 1, rest.size(), stdout);
      break;
    }
    RETURN_IF_ERROR(model->Step({{cache.get(), {&next, 1}, LogitsRequest::kLast}}, &out));
  }
  const auto t2 = Clock::now();
  std::string tail = detok.Flush();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::printf("\n");
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "prompt: %zu tokens in %.3f s (%.1f tok/s); generated: %d tokens in %.3f s "
               "(%.1f tok/s); finish: %s\n",
               prompt.size(), prefill_s, prompt.size() / prefill_s, n_generated, decode_s,
               n_generated / decode_s,
               stops.finished() ? FinishReasonName(stops.finish_reason()) : "context");
  return absl::OkStatus();
}

}  // namespace

void RegisterGenerateCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed");
  cmd->add_option("--model,-m", a->model, "GGUF model (any shard of a split set)")->required();
  cmd->add_option("--prompt,-p", a->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", a->chat, "Wrap the prompt in the DeepSeek-R1 chat template");
  cmd->add_option("-n,--n-predict", a->n_predict, "Maximum tokens to generate")
      ->capture_default_str();
  cmd->add_option("--threads,-t", a->threads, "CPU threads (0: all cores)");
  cmd->add_option("--kv-type", a->kv_type, "KV cache type: f16, q8_0, q4_0, f32")
      ->capture_default_str();
  cmd->add_option("--temperature,--temp", a->sampling.temperature, "0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", a->sampling.top_k, "0 = off")->capture_default_str();
  cmd->add_option("--top-p", a->sampling.top_p, "1 = off")->capture_default_str();
  cmd->add_option("--min-p", a->sampling.min_p, "0 = off")->capture_default_str();
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop", a->sampling.stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", a->sampling.ignore_eos, "Keep generating through EOS");
  cmd->callback([a, result] { *result = RunGenerate(*a); });
}

}  // namespace tritmoe
