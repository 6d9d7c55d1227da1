// A bounds-checked little-endian reader over a byte range. Every read of GGUF metadata goes
// through it, so a malformed or truncated file yields an error, never an out-of-bounds access.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace tritmoe::gguf {

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; this reader copies values without byte swapping");

class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }

  // Copies n bytes to out (may be null to skip them). `what` names the field in the error.
  absl::Status ReadBytes(void* out, uint64_t n, std::string_view what) {
    if (n > remaining()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("truncated file: %s needs %u bytes at offset %u but the file ends at %u",
                          std::string(what), n, pos_, size_));
    }
    if (out != nullptr && n > 0) std::memcpy(out, data_ + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Read(T* out, std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    return ReadBytes(out, sizeof(T), what);
  }

  // A gguf_string: uint64 length then that many bytes. Lengths above max_len are rejected
  // before anything is allocated.
  absl::Status ReadString(std::string* out, uint64_t max_len, std::string_view what) {
    uint64_t len = 0;
    const uint64_t at = pos_;
    absl::Status s = Read(&len, what);
    if (!s.ok()) return s;
    if (len > max_len) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: string length %u at offset %u exceeds the limit of %u bytes",
                          std::string(what), len, at, max_len));
    }
    if (len > remaining()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "truncated file: %s: string of %u bytes at offset %u but the file ends at %u",
          std::string(what), len, pos_, size_));
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

}  // namespace tritmoe::gguf
