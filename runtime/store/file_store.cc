#include "runtime/store/file_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/store/crc32c.h"

namespace tritmoe {
namespace {

// Reads above this many bytes are split over the reader threads; below it a thread costs more
// than it saves.
constexpr uint64_t kParallelReadBytes = uint64_t{1} << 20;

// Runs fn(i) for i in [0, n) on `threads` threads (the caller's included); returns the first error
// and skips the tasks not yet started once one failed.
absl::Status RunTasks(size_t n, int threads, const std::function<absl::Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  absl::Status first = absl::OkStatus();
  auto worker = [&] {
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= n) break;
      absl::Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = std::move(s);
        failed = true;
      }
    }
  };
  const int extra = std::max(0, std::min<int>(threads, static_cast<int>(n)) - 1);
  std::vector<std::thread> pool;
  pool.reserve(extra);
  for (int i = 0; i < extra; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  return first;
}

std::string Hex(uint32_t v) { return absl::StrFormat("0x%08x", v); }

}  // namespace

absl::Status FileStoreOptions::Validate() const {
  if (chunk_bytes == 0) return absl::InvalidArgumentError("file store: chunk_bytes must be > 0");
  if (reader_threads < 1)
    return absl::InvalidArgumentError("file store: reader_threads must be >= 1");
  return absl::OkStatus();
}

FileStore::~FileStore() = default;

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& path,
                                                           const FileStoreOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<FileStore> s(new FileStore());
  s->path_ = path;
  s->reader_threads_ = options.reader_threads;
  ASSIGN_OR_RETURN(s->model_, gguf::GgufModel::Open(path));
  const gguf::GgufModel& m = *s->model_;
  for (int i = 0; i < m.n_shards(); ++i) {
    const std::string& shard = m.shard(i).path();
    UniqueFd fd(::open(shard.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      return absl::InternalError(absl::StrCat("cannot open '", shard, "': ", std::strerror(errno)));
    }
    s->fds_.push_back(std::move(fd));
  }

  s->manifest_path_ = options.manifest_path.empty() ? ChecksumManifest::DefaultPath(m.path())
                                                    : options.manifest_path;
  std::optional<ChecksumManifest> manifest;
  if (options.verify != FileStoreOptions::Verify::kFirstRead) {
    absl::StatusOr<ChecksumManifest> read = ChecksumManifest::Read(s->manifest_path_);
    if (read.ok()) {
      RETURN_IF_ERROR(read->CheckMatches(m, s->manifest_path_));
      manifest = std::move(*read);
    } else if (!absl::IsNotFound(read.status()) ||
               options.verify == FileStoreOptions::Verify::kManifest) {
      return read.status();
    }
  }
  s->has_manifest_ = manifest.has_value();
  s->chunk_bytes_ = manifest ? manifest->chunk_bytes : options.chunk_bytes;

  std::vector<StoreTensor> table;
  table.reserve(m.tensors().size());
  s->tensors_.resize(m.tensors().size());
  for (size_t i = 0; i < m.tensors().size(); ++i) {
    const gguf::TensorInfo& info = m.tensors()[i];
    Tensor& t = s->tensors_[i];
    t.info = &info;
    t.layout = ChunkLayout::For(info.nbytes, info.ne[2], info.ne[3], s->chunk_bytes_);
    t.file_offset = m.shard(info.shard).data_offset() + info.offset;
    if (manifest) {
      t.recorded = std::move(manifest->tensors[i].crcs);
    } else {
      t.seen.reset(new std::atomic<uint64_t>[t.layout.n_chunks()]());
    }
    table.push_back({info.name, info.type, info.n_dims, info.ne, info.nbytes});
  }
  s->SetTensors(std::move(table));
  return s;
}

std::string FileStore::Where(const Tensor& t, uint64_t begin, uint64_t end) const {
  return absl::StrCat(model_->shard(t.info->shard).path(), ": tensor ", t.info->name, " bytes [",
                      begin, ", ", end, ") at file offset ", t.file_offset + begin);
}

absl::Status FileStore::ReadRaw(const Tensor& t, uint64_t offset_in_tensor, uint64_t size,
                                uint8_t* dst) const {
  const int fd = fds_[t.info->shard].get();
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, dst + done, size - done,
                              static_cast<off_t>(t.file_offset + offset_in_tensor + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(Where(t, offset_in_tensor, offset_in_tensor + size),
                                              ": read failed: ", std::strerror(errno)));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(Where(t, offset_in_tensor, offset_in_tensor + size),
                                              ": the file ends ", size - done,
                                              " bytes short (truncated shard?)"));
    }
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FileStore::ReadChunk(const Tensor& t, uint64_t c, uint8_t* buf) const {
  const uint64_t begin = t.layout.ChunkBegin(c), end = t.layout.ChunkEnd(c);
  for (int attempt = 0;; ++attempt) {
    RETURN_IF_ERROR(ReadRaw(t, begin, end - begin, buf));
    const uint32_t crc = Crc32c(buf, end - begin);
    uint32_t expected;
    if (has_manifest_) {
      expected = t.recorded[c];
    } else {
      uint64_t seen = 0;
      const uint64_t mine = (uint64_t{1} << 32) | crc;
      if (t.seen[c].compare_exchange_strong(seen, mine)) return absl::OkStatus();  // first read
      expected = static_cast<uint32_t>(seen);
    }
    if (crc == expected) return absl::OkStatus();
    if (attempt == 1) {
      return absl::DataLossError(
          absl::StrCat(Where(t, begin, end), ": corrupt chunk ", c, ": CRC-32C ", Hex(crc),
                       ", expected ", Hex(expected),
                       has_manifest_ ? absl::StrCat(" (from ", manifest_path_, ")")
                                     : std::string(" (as first read; the file changed under us)"),
                       ", twice"));
    }
  }
}

absl::Status FileStore::Read(std::span<const ReadRequest> requests) {
  struct Task {
    const ReadRequest* req;
    const Tensor* tensor;
    uint64_t chunk;
  };
  std::vector<Task> tasks;
  uint64_t total = 0;
  for (const ReadRequest& r : requests) {
    RETURN_IF_ERROR(CheckRequest(r));
    if (r.size == 0) continue;
    const Tensor& t = tensors_[FindTensor(r.tensor) - tensors().data()];
    const uint64_t c0 = t.layout.ChunkAt(r.offset), c1 = t.layout.ChunkAt(r.offset + r.size - 1);
    for (uint64_t c = c0; c <= c1; ++c) tasks.push_back({&r, &t, c});
    total += r.size;
  }
  const int threads = total >= kParallelReadBytes ? reader_threads_ : 1;
  return RunTasks(tasks.size(), threads, [&](size_t i) -> absl::Status {
    const Task& k = tasks[i];
    const uint64_t begin = k.tensor->layout.ChunkBegin(k.chunk);
    const uint64_t end = k.tensor->layout.ChunkEnd(k.chunk);
    const uint64_t want_begin = std::max(begin, k.req->offset);
    const uint64_t want_end = std::min(end, k.req->offset + k.req->size);
    uint8_t* out = k.req->dst + (want_begin - k.req->offset);
    if (want_begin == begin && want_end == end) return ReadChunk(*k.tensor, k.chunk, out);
    // A chunk only partly requested: verify the whole chunk in a buffer, copy the part.
    thread_local std::vector<uint8_t> buf;
    buf.resize(end - begin);
    RETURN_IF_ERROR(ReadChunk(*k.tensor, k.chunk, buf.data()));
    std::memcpy(out, buf.data() + (want_begin - begin), want_end - want_begin);
    return absl::OkStatus();
  });
}

absl::StatusOr<ChecksumManifest> FileStore::ComputeManifest(uint64_t chunk_bytes) const {
  if (chunk_bytes == 0) return absl::InvalidArgumentError("chunk_bytes must be > 0");
  ChecksumManifest m;
  m.chunk_bytes = chunk_bytes;
  for (int i = 0; i < model_->n_shards(); ++i) {
    const gguf::GgufFile& f = model_->shard(i);
    m.shards.push_back({std::filesystem::path(f.path()).filename().string(), f.file_size()});
  }
  m.tensors.resize(tensors_.size());
  struct Task {
    size_t tensor;
    uint64_t chunk;
  };
  std::vector<Task> tasks;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const gguf::TensorInfo& info = *tensors_[i].info;
    ChecksumManifest::Tensor& r = m.tensors[i];
    const ChunkLayout layout = ChunkLayout::For(info.nbytes, info.ne[2], info.ne[3], chunk_bytes);
    r = {info.name, info.shard, info.offset, info.nbytes, layout.unit_bytes, {}};
    r.crcs.resize(layout.n_chunks());
    for (uint64_t c = 0; c < layout.n_chunks(); ++c) tasks.push_back({i, c});
  }
  RETURN_IF_ERROR(RunTasks(tasks.size(), reader_threads_, [&](size_t k) -> absl::Status {
    const Tensor& t = tensors_[tasks[k].tensor];
    const ChunkLayout layout =
        ChunkLayout::For(t.info->nbytes, t.info->ne[2], t.info->ne[3], chunk_bytes);
    const uint64_t begin = layout.ChunkBegin(tasks[k].chunk), end = layout.ChunkEnd(tasks[k].chunk);
    thread_local std::vector<uint8_t> buf;
    buf.resize(end - begin);
    RETURN_IF_ERROR(ReadRaw(t, begin, end - begin, buf.data()));
    m.tensors[tasks[k].tensor].crcs[tasks[k].chunk] = Crc32c(buf.data(), end - begin);
    return absl::OkStatus();
  }));
  return m;
}

}  // namespace tritmoe
