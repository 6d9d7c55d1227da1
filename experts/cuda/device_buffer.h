// RAII owners for device memory, streams and events. Failures abort through TM_CHECK_CUDA: these
// are resource errors nothing above can recover from. Move-only; C++17-clean (usable from .cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/cuda_check.h"

namespace tritmoe {

// Device allocation on the current device (cudaMalloc: plain device memory, never managed).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) {
      TM_CHECK_CUDA(cudaMalloc(&ptr_, bytes_)) << "allocating " << bytes_ << " bytes";
    }
  }
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

  // Synchronous copies on the legacy stream (setup and tests; hot paths use their own streams).
  void CopyFromHost(const void* src, size_t n, size_t offset = 0) {
    TM_CHECK(offset + n <= bytes_);
    TM_CHECK_CUDA(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, n, cudaMemcpyHostToDevice));
  }
  void CopyToHost(void* dst, size_t n, size_t offset = 0) const {
    TM_CHECK(offset + n <= bytes_);
    TM_CHECK_CUDA(
        cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, n, cudaMemcpyDeviceToHost));
  }
  void Fill(int byte_value) { TM_CHECK_CUDA(cudaMemset(ptr_, byte_value, bytes_)); }

 private:
  void Reset() {
    if (ptr_ != nullptr) cudaFree(ptr_);  // errors here are sticky ones already reported elsewhere
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A non-blocking stream of the current device.
class CudaStream {
 public:
  CudaStream() { TM_CHECK_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~CudaStream() {
    if (s_ != nullptr) cudaStreamDestroy(s_);
  }
  CudaStream(CudaStream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  CudaStream& operator=(CudaStream&& o) noexcept {
    if (this != &o) {
      if (s_ != nullptr) cudaStreamDestroy(s_);
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  cudaStream_t get() const { return s_; }
  void Synchronize() const { TM_CHECK_CUDA(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

// A timing event (cudaEventDefault), for cudaEventElapsedTime.
class CudaEvent {
 public:
  CudaEvent() { TM_CHECK_CUDA(cudaEventCreate(&e_)); }
  ~CudaEvent() {
    if (e_ != nullptr) cudaEventDestroy(e_);
  }
  CudaEvent(CudaEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& o) noexcept {
    if (this != &o) {
      if (e_ != nullptr) cudaEventDestroy(e_);
      e_ = std::exchange(o.e_, nullptr);
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  cudaEvent_t get() const { return e_; }
  void Record(cudaStream_t s) { TM_CHECK_CUDA(cudaEventRecord(e_, s)); }
  void Synchronize() const { TM_CHECK_CUDA(cudaEventSynchronize(e_)); }
  // Milliseconds from `start` to this event (both recorded and complete).
  float MillisSince(const CudaEvent& start) const {
    float ms = 0;
    TM_CHECK_CUDA(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace tritmoe
