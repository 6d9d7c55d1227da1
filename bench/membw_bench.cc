// Memory read bandwidth of this machine: a 1 GiB buffer summed with wide vector loads by 1..N
// threads (each thread a contiguous slice). The GEMV benchmarks (matmul_bench.cc) are judged
// against this number, so it uses the same kind of loop a streaming kernel would: independent
// accumulators, no stores, no prefetch hints. cpu_bytes_per_second: the bytes over the process's
// CPU time divided by the thread count (the speed while the threads run; see matmul_bench.cc).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "base/thread_pool.h"
#include "benchmark/benchmark.h"

// GCC 12 flags the _mm512_undefined_* placeholders inside its own reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace tritmoe {
namespace {

constexpr int64_t kBufferBytes = int64_t{1} << 30;

double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

__attribute__((target("avx512f"))) uint64_t SumAvx512(const uint8_t* p, int64_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < n; i += 256) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
  }
  return _mm512_reduce_add_epi64(
      _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
}

__attribute__((target("avx2"))) uint64_t SumAvx2(const uint8_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  return v[0] + v[1] + v[2] + v[3];
}

uint8_t* Buffer() {
  static uint8_t* const buf = [] {
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, kBufferBytes));
    // Distinct pseudo-random contents on every page, so that no page can be shared or
    // deduplicated by the OS or hypervisor (identical pages could be served from one frame).
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (int64_t i = 0; i < kBufferBytes; i += 8) {
      state += 0x9E3779B97F4A7C15ULL;
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      z ^= z >> 31;
      std::memcpy(p + i, &z, 8);
    }
    return p;
  }();
  return buf;
}

// state.range(0): threads; state.range(1): 1 = AVX-512 loads, 0 = AVX2 loads.
void BM_ReadBandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const bool avx512 = state.range(1) != 0;
  if (avx512 && !__builtin_cpu_supports("avx512f")) {
    state.SkipWithError("no AVX-512");
    return;
  }
  uint8_t* buf = Buffer();
  ThreadPool pool(threads);
  std::vector<uint64_t> sums(threads);
  const int64_t slice = kBufferBytes / threads;
  const double cpu0 = ProcessCpuSeconds();
  for (auto _ : state) {
    pool.ParallelFor(threads, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        sums[t] = avx512 ? SumAvx512(buf + t * slice, slice) : SumAvx2(buf + t * slice, slice);
      }
    });
    benchmark::DoNotOptimize(sums.data());
  }
  const double cpu_seconds = ProcessCpuSeconds() - cpu0;
  state.SetBytesProcessed(state.iterations() * kBufferBytes);
  state.counters["cpu_bytes_per_second"] = static_cast<double>(state.iterations() * kBufferBytes) *
                                           threads / std::max(cpu_seconds, 1e-9);
}
BENCHMARK(BM_ReadBandwidth)
    ->ArgNames({"threads", "avx512"})
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(1.0);

}  // namespace
}  // namespace tritmoe

BENCHMARK_MAIN();
