// A read-only memory mapping of a whole file, owning its descriptor (RAII). Pages are loaded
// lazily by the kernel, so mapping a 130 GB model costs nothing until tensors are touched.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tritmoe::gguf {

class MappedFile {
 public:
  // Errors: NotFound when the file does not exist, InvalidArgument for a directory or other
  // non-regular file, Internal for other system failures; all name the path.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }  // nullptr for an empty file
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }

 private:
  MappedFile() = default;
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace tritmoe::gguf
