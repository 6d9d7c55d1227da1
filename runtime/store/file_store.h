// A model store on a filesystem: a GGUF file or split set read with pread (never through a
// mapping, so a shard truncated under a running server is an error, not a SIGBUS). Every chunk
// (chunk_layout.h) is checked against its CRC-32C before its bytes are handed out: against the
// checksum manifest when there is one, else against the checksum taken the first time the chunk
// was read in this process (which catches bytes that change between reads — a flaky network
// filesystem, a file replaced under us — but not corruption already present at the first read; run
// `tritmoe store --write-checksums` once for full verification). A bad chunk is read a second
// time before it is reported (a transient read error heals; a corrupt file does not).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"
#include "runtime/store/checksum_manifest.h"
#include "runtime/store/chunk_layout.h"
#include "runtime/store/expert_store.h"
#include "runtime/store/unique_fd.h"

namespace tritmoe {

struct FileStoreOptions {
  enum class Verify {
    kAuto,       // the manifest when there is one, else checksums taken at the first read
    kManifest,   // the manifest must exist (NotFound otherwise)
    kFirstRead,  // ignore any manifest
  };
  Verify verify = Verify::kAuto;
  std::string manifest_path;                 // empty: ChecksumManifest::DefaultPath(path)
  uint64_t chunk_bytes = uint64_t{1} << 20;  // chunking without a manifest (a manifest has its own)
  int reader_threads = 4;  // parallel preads within one large Read (and ComputeManifest)

  absl::Status Validate() const;
};

class FileStore final : public ExpertStore {
 public:
  // Opens the model (any shard of a split set) and its manifest. Errors: those of
  // gguf::GgufModel::Open (a missing or truncated shard names the file), a manifest that does not
  // match the files (FailedPrecondition), a malformed manifest (InvalidArgument).
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& path,
                                                         const FileStoreOptions& options = {});
  ~FileStore() override;

  const std::string& name() const override { return path_; }
  absl::Status Read(std::span<const ReadRequest> requests) override;
  using ExpertStore::Read;

  bool verified_by_manifest() const { return has_manifest_; }
  const std::string& manifest_path() const { return manifest_path_; }
  uint64_t chunk_bytes() const { return chunk_bytes_; }
  const gguf::GgufModel& model() const { return *model_; }

  // Reads every tensor once (unverified) and returns its checksums, for --write-checksums.
  absl::StatusOr<ChecksumManifest> ComputeManifest(uint64_t chunk_bytes) const;

 private:
  struct Tensor {
    const gguf::TensorInfo* info = nullptr;
    ChunkLayout layout;
    uint64_t file_offset = 0;                       // of byte 0 in its shard
    std::vector<uint32_t> recorded;                 // manifest checksums, one per chunk
    std::unique_ptr<std::atomic<uint64_t>[]> seen;  // first-read mode: 0 or (1 << 32 | crc)
  };

  FileStore() = default;
  // Reads file bytes [offset, offset + size) of shard `shard` into dst; DataLoss on a short read.
  absl::Status ReadRaw(const Tensor& t, uint64_t offset_in_tensor, uint64_t size,
                       uint8_t* dst) const;
  // Reads chunk c of t into buf (its full length) and verifies it (re-reading once on a mismatch).
  absl::Status ReadChunk(const Tensor& t, uint64_t c, uint8_t* buf) const;
  std::string Where(const Tensor& t, uint64_t begin, uint64_t end) const;

  std::string path_;
  std::string manifest_path_;
  bool has_manifest_ = false;
  uint64_t chunk_bytes_ = 0;
  int reader_threads_ = 1;
  std::unique_ptr<gguf::GgufModel> model_;
  std::vector<UniqueFd> fds_;    // one per shard
  std::vector<Tensor> tensors_;  // in model order, same index as tensors()
};

}  // namespace tritmoe
