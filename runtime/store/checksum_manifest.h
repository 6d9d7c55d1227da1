// The recorded checksums of a model: one CRC-32C per chunk (chunk_layout.h) of every tensor,
// written once by `tritmoe store --model PATH --write-checksums` next to the model (the first
// shard's path + ".tmsum") and checked on every read by the file store. The manifest also records
// each shard's size and the tensor table (shard, offset, size), so a manifest of another model, a
// replaced file or a truncated shard is refused at open with the first difference named.
//
// Text format, version 1:
//   tritmoe-checksums 1
//   chunk_bytes <n>
//   shard <size> <file name without directory>        (one line per shard, in order)
//   tensor <name> <shard> <offset> <nbytes> <unit_bytes> <n_chunks>
//   <crc> ...                                          (n_chunks 8-digit hex values, one line)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"

namespace tritmoe {

struct ChecksumManifest {
  struct Shard {
    std::string file;  // base name
    uint64_t size = 0;
  };
  struct Tensor {
    std::string name;
    int shard = 0;
    uint64_t offset = 0;  // in the shard's data section
    uint64_t nbytes = 0;
    uint64_t unit_bytes = 0;
    std::vector<uint32_t> crcs;  // one per chunk
  };

  uint64_t chunk_bytes = 0;
  std::vector<Shard> shards;
  std::vector<Tensor> tensors;  // the model's order

  // Where the manifest of the model opened from `model_path` lives: the first shard's path (the
  // path itself for a single file) + ".tmsum".
  static std::string DefaultPath(const std::string& model_path);

  // NotFound when there is none; InvalidArgument naming the path and line when malformed.
  static absl::StatusOr<ChecksumManifest> Read(const std::string& path);
  // Written to a temporary name and renamed, so a reader never sees half a manifest.
  absl::Status Write(const std::string& path) const;

  // FailedPrecondition naming the first difference (shard count, name or size; tensor set,
  // placement or size; chunk count) between this manifest and the opened model.
  absl::Status CheckMatches(const gguf::GgufModel& model, const std::string& manifest_path) const;
};

}  // namespace tritmoe
