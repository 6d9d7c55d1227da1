// What the front-ends know about the model being served: immutable after start-up, shared by
// every handler thread.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/model/model_config.h"
#include "runtime/text/tokenizer.h"

namespace tritmoe {

enum class ReasoningParserKind { kNone, kDeepSeekR1 };

struct ServedModel {
  std::string name;           // the served model name: what clients pass as `model`
  std::string path;           // GGUF path
  std::string architecture;   // GGUF general.architecture
  int64_t max_model_len = 0;  // prompt + generated tokens of one request
  ReasoningParserKind reasoning_parser = ReasoningParserKind::kDeepSeekR1;
  int world_size = 1;
  const Tokenizer* tokenizer = nullptr;  // not owned; thread-safe (const methods)
  const ModelConfig* config = nullptr;   // not owned
};

}  // namespace tritmoe
