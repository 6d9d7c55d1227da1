// Little-endian byte writer and bounds-checked reader for the engine's messages between ranks
// (steps broadcast by the driver, results gathered back). Both ends are the same binary, so the
// format only has to be unambiguous, not stable; the reader still checks every length, so a
// corrupted or truncated message is an error, never an out-of-bounds read.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tritmoe {

static_assert(std::endian::native == std::endian::little, "wire messages are little-endian");

class WireWriter {
 public:
  template <typename T>
  void Put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    PutBytes(&v, sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    PutBytes(s.data(), s.size());
  }
  // A count, then the elements.
  template <typename T>
  void PutVector(std::span<const T> v) {
    static_assert(std::is_trivially_copyable_v<T>);
    Put<uint64_t>(v.size());
    PutBytes(v.data(), v.size_bytes());
  }
  void PutBytes(const void* p, size_t n) {
    const size_t at = bytes_.size();
    bytes_.resize(at + n);
    if (n > 0) std::memcpy(bytes_.data() + at, p, n);
  }

  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

class WireReader {
 public:
  explicit WireReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  absl::Status Get(T* out) {
    static_assert(std::is_trivially_copyable_v<T>);
    return GetBytes(out, sizeof(T));
  }
  absl::Status GetString(std::string* out) {
    uint64_t n = 0;
    if (absl::Status s = Get(&n); !s.ok()) return s;
    if (n > remaining()) return Truncated(n);
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status GetVector(std::vector<T>* out) {
    uint64_t n = 0;
    if (absl::Status s = Get(&n); !s.ok()) return s;
    if (n > remaining() / sizeof(T)) return Truncated(n * sizeof(T));
    out->resize(n);
    return GetBytes(out->data(), n * sizeof(T));
  }
  absl::Status GetBytes(void* out, size_t n) {
    if (n > remaining()) return Truncated(n);
    if (n > 0) std::memcpy(out, bytes_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Status Truncated(uint64_t want) const {
    return absl::DataLossError(absl::StrCat("engine message truncated: ", want, " bytes wanted at ",
                                            pos_, " of ", bytes_.size()));
  }

  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

}  // namespace tritmoe
