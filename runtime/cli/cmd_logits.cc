// tritmoe logits: runs the model over a token sequence and writes the logits after every position
// (little-endian float32 [n_tokens][n_vocab]); the engine's end of the NumPy reference comparison.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/cli/commands.h"
#include "runtime/model/model.h"

namespace tritmoe {
namespace {

// Token ids, decimal, one per line (any whitespace separates; '#' starts a comment).
absl::StatusOr<std::vector<int32_t>> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open token file ", path));
  std::vector<int32_t> ids;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(word, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": '", word, "' is not a token id"));
      }
      ids.push_back(id);
    }
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token ids"));
  return ids;
}

absl::Status RunLogits(const std::string& model_path, const std::string& tokens_path,
                       const std::string& out_path, const std::string& precision,
                       const std::string& kv_type, const std::string& attention, int threads,
                       bool verbose) {
  ModelOptions opts;
  if (precision == "float") {
    opts.precision = ActPrecision::kFloat;
  } else if (precision == "quantized") {
    opts.precision = ActPrecision::kQuantized;
  } else {
    return absl::InvalidArgumentError("--precision must be float or quantized");
  }
  absl::StatusOr<KvCacheType> kv = ParseKvCacheType(kv_type);
  if (!kv.ok()) return kv.status();
  opts.kv_type = *kv;
  if (attention == "auto") {
    opts.attention = AttentionForm::kAuto;
  } else if (attention == "naive") {
    opts.attention = AttentionForm::kNaive;
  } else if (attention == "absorbed") {
    opts.attention = AttentionForm::kAbsorbed;
  } else {
    return absl::InvalidArgumentError("--attention must be auto, naive or absorbed");
  }
  opts.threads = threads;
  absl::StatusOr<std::vector<int32_t>> tokens = ReadTokenFile(tokens_path);
  if (!tokens.ok()) return tokens.status();
  const int64_t n = static_cast<int64_t>(tokens->size());
  opts.max_context = n;  // exactly what this one sequence needs

  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(model_path, opts);
  if (!model.ok()) return model.status();
  if (verbose) std::fprintf(stderr, "%s\n", (*model)->config().DebugString().c_str());
  absl::StatusOr<std::unique_ptr<KvCache>> cache = (*model)->NewKvCache(n);
  if (!cache.ok()) return cache.status();
  auto t1 = std::chrono::steady_clock::now();
  StepOutput out;
  SequenceInput seq{cache->get(), *tokens, LogitsRequest::kAll};
  if (absl::Status s = (*model)->Step({seq}, &out); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(tokens_path, ": ", s.message()));
  }
  auto t2 = std::chrono::steady_clock::now();

  // float32 is little-endian on every host we build for (x86-64, aarch64).
  std::ofstream f(out_path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(out.logits.data()),
          static_cast<std::streamsize>(out.logits.size() * sizeof(float)));
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", out_path));
  std::fprintf(stderr, "logits: %lld tokens x %lld vocab -> %s (load %.2f s, forward %.2f s)\n",
               static_cast<long long>(n), static_cast<long long>(out.n_vocab), out_path.c_str(),
               std::chrono::duration<double>(t1 - t0).count(),
               std::chrono::duration<double>(t2 - t1).count());
  return absl::OkStatus();
}

}  // namespace

void RegisterLogitsCommand(CLI::App& app, absl::Status* result) {
  struct Args {
    std::string model, tokens, out;
    std::string precision = "quantized";
    std::string kv_type = "f16";
    std::string attention = "auto";
    int threads = 0;
    bool verbose = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "logits",
      "Run one forward pass over a token sequence and write the logits of every position");
  cmd->add_option("--model,-m", args->model, "GGUF model (a file or any shard of a split set)")
      ->required();
  cmd->add_option("--tokens-file", args->tokens, "Token ids, one per line")->required();
  cmd->add_option("--out,-o", args->out, "Output: little-endian float32 [n_tokens][n_vocab]")
      ->required();
  cmd->add_option("--precision", args->precision,
                  "float (weights decoded, float math) or quantized (activations quantized)")
      ->capture_default_str();
  cmd->add_option("--kv-type", args->kv_type, "KV cache type: f16, q8_0, q4_0 (or f32, exact)")
      ->capture_default_str();
  cmd->add_option("--attention", args->attention,
                  "MLA form: auto (naive prefill, absorbed decode), naive or absorbed")
      ->capture_default_str();
  cmd->add_option("--threads,-t", args->threads, "Threads (0: all cores)");
  cmd->add_flag("--verbose,-v", args->verbose, "Print the model configuration");
  cmd->callback([args, result] {
    *result = RunLogits(args->model, args->tokens, args->out, args->precision, args->kv_type,
                        args->attention, args->threads, args->verbose);
  });
}

}  // namespace tritmoe
