// A fixed-size, page-aligned, zero-on-first-touch host buffer backed by an anonymous mapping.
//
// The exchange buffers are sized for the worst case (every token of every rank routed here),
// which can be far larger than what a typical step touches. An anonymous MAP_NORESERVE mapping
// reserves address space only: pages never written are never backed by memory, and the kernel's
// overcommit heuristic does not refuse a reservation larger than RAM.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace tritmoe {

class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(int64_t bytes) {
    if (bytes <= 0) return;
    void* p = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      data_ = static_cast<std::byte*>(p);
      bytes_ = bytes;
    }
  }
  ~HostBuffer() {
    if (data_ != nullptr) munmap(data_, static_cast<size_t>(bytes_));
  }
  HostBuffer(HostBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  // Null when the mapping failed or the size was 0: check size() against what was asked.
  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  int64_t size() const { return bytes_; }

 private:
  std::byte* data_ = nullptr;
  int64_t bytes_ = 0;
};

}  // namespace tritmoe
