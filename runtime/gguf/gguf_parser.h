// Internal: fills a GgufFile's metadata from its bytes (base_, size_), validating everything.
#pragma once

#include "absl/status/status.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe::gguf {

class GgufParser {
 public:
  // Parses file->base_[0, file->size_). On error the message starts with file->path_.
  static absl::Status Parse(GgufFile* file);
};

}  // namespace tritmoe::gguf
