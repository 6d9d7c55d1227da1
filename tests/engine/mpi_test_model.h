// The tiny generated model the engine's MPI tests share: rank 0 writes DIR/tiny-RECIPE.gguf once
// (aside and renamed: concurrent tests may generate the same, identical file), every rank waits
// for it at a barrier and gets its path; and the engine options they run it with.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "comm/communicator.h"
#include "runtime/engine/engine.h"
#include "runtime/modelgen/model_generator.h"

namespace tritmoe {

inline absl::StatusOr<std::string> EnsureTinyModel(Communicator& comm, const std::string& dir,
                                                   const std::string& recipe = "f16") {
  const std::string path =
      std::filesystem::weakly_canonical(dir).string() + "/tiny-" + recipe + ".gguf";
  if (comm.rank() == 0 && !std::filesystem::exists(path)) {
    std::filesystem::create_directories(dir);
    ASSIGN_OR_RETURN(ModelShape shape, GetModelShape("tiny", 0));
    ASSIGN_OR_RETURN(QuantRecipe r, QuantRecipe::Parse(recipe));
    const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
    RETURN_IF_ERROR(GenerateModel(shape, r, GenerateOptions{}, tmp));
    std::filesystem::rename(tmp, path);
  }
  RETURN_IF_ERROR(comm.Barrier());
  return path;
}

// The engine options of these tests: one thread per rank, room for 8 sequences and 128 tokens a
// step, and an exact KV cache (with f16 the rounding of a cached latent row can flip on a
// float-order difference, and a sequence's batch-mates differ between rank counts).
inline EngineOptions MpiTestEngineOptions(const std::string& path) {
  EngineOptions o;
  o.model_path = path;
  o.model.threads = 1;
  o.model.kv_type = KvCacheType::kF32;
  o.max_tokens_per_step = 128;
  o.max_sequences = 8;
  return o;
}

}  // namespace tritmoe
