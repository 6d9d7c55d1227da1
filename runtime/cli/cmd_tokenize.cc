// tritmoe tokenize: prints the token ids and pieces of a text under a model's tokenizer.
#include <cstdio>
#include <memory>
#include <string>

#include "base/status_macros.h"
#include "runtime/cli/commands.h"
#include "runtime/gguf/gguf.h"
#include "runtime/model/vocab_loader.h"

namespace tritmoe {
namespace {

struct TokenizeArgs {
  std::string model;
  std::string prompt;
  bool add_bos = false;
  bool parse_special = false;
  bool ids_only = false;
};

absl::Status RunTokenize(const TokenizeArgs& a) {
  ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufModel> file, gguf::GgufModel::Open(a.model));
  ASSIGN_OR_RETURN(Tokenizer tokenizer, LoadTokenizer(*file));
  ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                   tokenizer.Encode(a.prompt, a.add_bos, a.parse_special));
  for (int32_t id : ids) {
    if (a.ids_only) {
      std::printf("%d\n", id);
      continue;
    }
    ASSIGN_OR_RETURN(std::string_view piece, tokenizer.TokenToPiece(id, /*render_special=*/true));
    std::printf("%6d -> '%.*s'\n", id, static_cast<int>(piece.size()), piece.data());
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterTokenizeCommand(CLI::App& app, absl::Status* result) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the tokens of a text");
  cmd->add_option("--model,-m", a->model, "GGUF model")->required();
  cmd->add_option("--prompt,-p", a->prompt, "Text")->required();
  cmd->add_flag("--add-bos", a->add_bos, "Prepend BOS");
  cmd->add_flag("--parse-special", a->parse_special, "Match special tokens in the text");
  cmd->add_flag("--ids", a->ids_only, "Print only ids, one per line (a --tokens-file)");
  cmd->callback([a, result] { *result = RunTokenize(*a); });
}

}  // namespace tritmoe
