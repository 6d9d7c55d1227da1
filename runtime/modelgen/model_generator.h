// Writes a deepseek2 GGUF with seeded random weights for a named shape and quantization recipe
// (`tritmoe gen-model`). Only standard llama.cpp keys and tensor names are used, so the files load
// in llama.cpp. The same (shape, recipe, seed) always gives the same bytes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "runtime/modelgen/model_shape.h"
#include "runtime/modelgen/quant_recipe.h"

namespace tritmoe {

struct GenerateOptions {
  uint64_t seed = 1234;
  int threads = 1;
  // Tensors with more elements than this are built by tiling a pool of independently quantized
  // random rows (chosen per row by a seeded hash) instead of quantizing every row: generating the
  // 671B v3 shape would otherwise take hours. 0 disables tiling.
  int64_t tile_threshold_elems = int64_t{1} << 26;
  // Split into gguf-split shards of at most this many tensors (0: one file).
  int max_tensors_per_shard = 0;
};

// Writes the model to `path` (with shards <path-without-.gguf>-0000i-of-0000n.gguf when split).
absl::Status GenerateModel(const ModelShape& shape, const QuantRecipe& recipe,
                           const GenerateOptions& options, const std::string& path);

}  // namespace tritmoe
