// GEMV / small-GEMM throughput of MatMul per weight type at DeepSeek-V3 routed-expert shapes.
// Each iteration multiplies the next of several matrices, cycling through a working set much
// larger than the caches (kWorkingSetBytes), so weights stream from memory as in decode.
// Counters: bytes_per_second = weight bytes read per second (each matrix is read once per call,
// whatever the batch); weights_x_tokens = multiply-adds per second (rows * cols * tokens).
// IQ1_S_quads is IQ1_S repacked into the CPU layout (experts/matmul_repack.h): its bytes_per_second
// counts the bytes it reads (64 per 256 weights) and gguf_bytes_per_second the IQ1_S bytes the
// same matrix has in the GGUF file (50 per 256), i.e. the speed in terms of the model. TQ1_0_tq2 is
// TQ1_0 repacked into TQ2_0 blocks (kTq1AsTq2): 66 bytes read per 256 weights, 54 in the file.
//
// cpu_bytes_per_second = the same bytes over the process's CPU time divided by the thread count:
// the speed while the threads actually run. On a shared machine whose cores are oversubscribed the
// wall-clock rate mostly measures the share of the cores the benchmark got; bench_membw reports
// the same counter, and docs/PERF.md compares like with like (bench/perf_table.py --cpu-time).
//
// Name: BM_MatMul/<type>[_quads|_tq2]/<rows>x<cols>/threads:<T>/batch:<B>/<isa> (batch > 1 at
// 2 threads)
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "benchmark/benchmark.h"
#include "experts/fp16.h"
#include "experts/matmul.h"
#include "experts/matmul_isa.h"
#include "experts/matmul_packed.h"
#include "experts/matmul_repack.h"
#include "experts/quant_type.h"

namespace tritmoe {
namespace {

constexpr int64_t kWorkingSetBytes = int64_t{384} << 20;

double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Byte offsets of the fp16 scales of a block (set to a sane value so results stay finite).
void SaneScales(GgmlType type, uint8_t* b) {
  const uint16_t h = Fp32ToFp16(0.01f);
  auto put = [&](int off) { std::memcpy(b + off, &h, 2); };
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ8_0:
    case GgmlType::kIQ2_XXS:
    case GgmlType::kIQ1_S:
    case GgmlType::kQ4_K:
      put(0);
      if (type == GgmlType::kQ4_K) put(2);
      break;
    case GgmlType::kQ2_K:
      put(80);
      put(82);
      break;
    case GgmlType::kQ6_K:
      put(208);
      break;
    case GgmlType::kTQ1_0:
      put(52);
      break;
    case GgmlType::kTQ2_0:
      put(64);
      break;
    default:
      break;  // IQ1_M: random top nibbles give some finite fp16; float types handled below
  }
}

// Random block bytes with sane scales: the kernels' speed does not depend on the values.
std::vector<uint8_t> MakeWeightsUncached(GgmlType type, int64_t bytes, uint32_t seed) {
  std::vector<uint8_t> w(bytes);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i + 8 <= bytes; i += 8) {
    const uint64_t r = rng();
    std::memcpy(w.data() + i, &r, 8);
  }
  const TypeTraits& t = GetTypeTraits(type);
  if (type == GgmlType::kF32) {
    for (int64_t i = 0; i + 4 <= bytes; i += 4) {
      const float f = static_cast<float>(w[i]) / 256.0f - 0.5f;
      std::memcpy(w.data() + i, &f, 4);
    }
  } else if (type == GgmlType::kF16 || type == GgmlType::kBF16) {
    for (int64_t i = 0; i + 2 <= bytes; i += 2) {
      const float f = static_cast<float>(w[i]) / 256.0f - 0.5f;
      const uint16_t h = type == GgmlType::kF16 ? Fp32ToFp16(f) : Fp32ToBf16(f);
      std::memcpy(w.data() + i, &h, 2);
    }
  } else if (type == GgmlType::kIQ1_M) {
    for (int64_t off = 0; off + t.block_bytes <= bytes; off += t.block_bytes) {
      // fp16 super-scale 0x2000 (~0.0078) in the top nibbles of the scale words.
      for (int k = 0; k < 4; ++k) w[off + 48 + 2 * k + 1] &= 0x0F;
      w[off + 48 + 2 * 2 + 1] |= 0x00;
      w[off + 48 + 2 * 3 + 1] |= 0x20;
    }
  } else {
    for (int64_t off = 0; off + t.block_bytes <= bytes; off += t.block_bytes) {
      SaneScales(type, w.data() + off);
    }
  }
  return w;
}

// The last type's weights, kept so that repetitions and shapes do not refill 384 MiB each time.
const std::vector<uint8_t>& MakeWeights(GgmlType type, int64_t bytes, uint32_t seed) {
  static auto* cache = new std::vector<uint8_t>();
  static GgmlType cached_type = GgmlType::kF32;
  if (cache->empty() || cached_type != type || static_cast<int64_t>(cache->size()) < bytes) {
    cache->clear();
    cache->shrink_to_fit();
    *cache =
        MakeWeightsUncached(type, std::max(bytes, kWorkingSetBytes + (int64_t{64} << 20)), seed);
    cached_type = type;
  }
  return *cache;
}

// `bytes` of `type` weights repacked into `layout`, as `blocks` rows of one 256-element block (the
// blocks' order does not matter to the kernels' speed). The last layout's, kept like MakeWeights.
const RepackedWeights& MakeRepackedWeights(GgmlType type, WeightLayout layout, int64_t bytes) {
  static auto* cache = new RepackedWeights();
  static WeightLayout cached_layout = WeightLayout::kGguf;
  if (cached_layout != layout || cache->bytes() < bytes) {
    *cache = RepackedWeights();
    const int64_t block_bytes = LayoutRowBytes(type, layout, 256);
    const int64_t blocks = std::max(bytes, kWorkingSetBytes + (int64_t{64} << 20)) / block_bytes;
    const std::vector<uint8_t>& gguf = MakeWeights(type, blocks * RowBytes(type, 256), 1);
    ThreadPool pool(DefaultThreadCount());
    *cache = RepackWeights({type, gguf.data(), blocks, 256}, layout, &pool).value();
    cached_layout = layout;
  }
  return *cache;
}

// working_set: bytes of distinct weights cycled through (at least two matrices' worth).
void BM_MatMul(benchmark::State& state, GgmlType type, WeightLayout layout, int64_t rows,
               int64_t cols, int threads, int batch, MatmulIsa isa, int64_t working_set) {
  if (!SetMatmulIsaForTesting(isa).ok()) {
    state.SkipWithError("ISA not supported");
    return;
  }
  const int64_t matrix_bytes = rows * LayoutRowBytes(type, layout, cols);
  const int64_t n_matrices = std::max<int64_t>(2, (working_set + matrix_bytes - 1) / matrix_bytes);
  const uint8_t* weights =
      layout == WeightLayout::kGguf
          ? MakeWeights(type, matrix_bytes * n_matrices, 1).data()
          : static_cast<const uint8_t*>(
                MakeRepackedWeights(type, layout, matrix_bytes * n_matrices).view().data);
  std::vector<float> x(batch * cols);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& v : x) v = dist(rng);
  std::vector<float> y(batch * rows);
  ThreadPool pool(threads);
  int64_t m = 0;
  const double cpu0 = ProcessCpuSeconds();
  for (auto _ : state) {
    const WeightView w{type, weights + m * matrix_bytes, rows, cols, layout};
    MatMul(w, x.data(), batch, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    m = m + 1 == n_matrices ? 0 : m + 1;
  }
  const double cpu_seconds = ProcessCpuSeconds() - cpu0;
  state.SetBytesProcessed(state.iterations() * matrix_bytes);
  state.counters["cpu_bytes_per_second"] = static_cast<double>(state.iterations() * matrix_bytes) *
                                           threads / std::max(cpu_seconds, 1e-9);
  if (layout != WeightLayout::kGguf) {
    state.counters["gguf_bytes_per_second"] = benchmark::Counter(
        static_cast<double>(rows * RowBytes(type, cols)) * static_cast<double>(state.iterations()),
        benchmark::Counter::kIsRate);
  }
  state.counters["weights_x_tokens"] = benchmark::Counter(
      static_cast<double>(rows * cols * batch) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  (void)SetMatmulIsaForTesting(BestSupportedMatmulIsa());
}

// The dot kernels alone: activations packed once outside the loop, a matrix that stays in L2,
// one thread. This is the compute ceiling of a type's kernel.
void BM_KernelInCache(benchmark::State& state, GgmlType type, WeightLayout layout, int64_t rows,
                      int64_t cols, int batch, MatmulIsa isa) {
  if (!SetMatmulIsaForTesting(isa).ok()) {
    state.SkipWithError("ISA not supported");
    return;
  }
  const int64_t matrix_bytes = rows * LayoutRowBytes(type, layout, cols);
  const uint8_t* weights = layout == WeightLayout::kGguf
                               ? MakeWeights(type, matrix_bytes, 1).data()
                               : static_cast<const uint8_t*>(
                                     MakeRepackedWeights(type, layout, matrix_bytes).view().data);
  std::vector<float> x(batch * cols);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& v : x) v = dist(rng);
  std::vector<float> y(batch * rows);
  ThreadPool pool(1);
  const WeightView w{type, weights, rows, cols, layout};
  PackedActivations packed;
  packed.Pack(w, x.data(), batch);
  for (auto _ : state) {
    MatMulPacked(w, packed, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * matrix_bytes);
  state.counters["weights_x_tokens"] = benchmark::Counter(
      static_cast<double>(rows * cols * batch) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  (void)SetMatmulIsaForTesting(BestSupportedMatmulIsa());
}

// Packing (quantizing) one activation row of `cols` floats for weights of `type`.
void BM_PackActivations(benchmark::State& state, GgmlType type, WeightLayout layout, int64_t cols,
                        MatmulIsa isa) {
  if (!SetMatmulIsaForTesting(isa).ok()) {
    state.SkipWithError("ISA not supported");
    return;
  }
  std::vector<float> x(cols);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& v : x) v = dist(rng);
  PackedActivations packed;
  for (auto _ : state) {
    packed.Pack(type, x.data(), 1, cols, nullptr, ActPrecision::kQuantized, layout);
    benchmark::DoNotOptimize(packed.data());
  }
  state.SetItemsProcessed(state.iterations() * cols);
  (void)SetMatmulIsaForTesting(BestSupportedMatmulIsa());
}

// A weight type in a layout, as benchmarked.
struct Format {
  GgmlType type;
  WeightLayout layout;
};

std::string FormatName(const Format& f) {
  return std::string(GetTypeTraits(f.type).name) + (f.layout == WeightLayout::kIq1sQuads  ? "_quads"
                                                    : f.layout == WeightLayout::kTq1AsTq2 ? "_tq2"
                                                                                          : "");
}

void RegisterAll() {
  const Format kFormats[] = {
      {GgmlType::kIQ1_S, WeightLayout::kGguf},   {GgmlType::kIQ1_S, WeightLayout::kIq1sQuads},
      {GgmlType::kTQ1_0, WeightLayout::kGguf},   {GgmlType::kTQ1_0, WeightLayout::kTq1AsTq2},
      {GgmlType::kTQ2_0, WeightLayout::kGguf},   {GgmlType::kIQ1_M, WeightLayout::kGguf},
      {GgmlType::kIQ2_XXS, WeightLayout::kGguf}, {GgmlType::kQ2_K, WeightLayout::kGguf},
      {GgmlType::kQ4_K, WeightLayout::kGguf},    {GgmlType::kQ6_K, WeightLayout::kGguf},
      {GgmlType::kQ4_0, WeightLayout::kGguf},    {GgmlType::kQ8_0, WeightLayout::kGguf},
      {GgmlType::kBF16, WeightLayout::kGguf},    {GgmlType::kF16, WeightLayout::kGguf},
      {GgmlType::kF32, WeightLayout::kGguf}};
  const int64_t kShapes[][2] = {{2048, 7168}, {7168, 2048}};
  for (int isa = static_cast<int>(BestSupportedMatmulIsa()); isa >= 0; --isa) {
    for (const Format& f : kFormats) {
      // The scalar quads kernel is a reference, far too slow to time at these sizes.
      if (f.layout != WeightLayout::kGguf && isa == 0) continue;
      for (const auto& shape : kShapes) {
        for (int threads : {1, 2}) {
          // Batched products only at 2 threads (the PERF.md table compares them with batch 1).
          for (int batch : {1, 4, 8, 16}) {
            if (threads == 1 && batch > 1) continue;
            const std::string name = "BM_MatMul/" + FormatName(f) + "/" + std::to_string(shape[0]) +
                                     "x" + std::to_string(shape[1]) +
                                     "/threads:" + std::to_string(threads) +
                                     "/batch:" + std::to_string(batch) + "/" +
                                     MatmulIsaName(static_cast<MatmulIsa>(isa));
            benchmark::RegisterBenchmark(name.c_str(), BM_MatMul, f.type, f.layout, shape[0],
                                         shape[1], threads, batch, static_cast<MatmulIsa>(isa),
                                         kWorkingSetBytes)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond)
                ->MinTime(0.5);
          }
        }
      }
    }
  }
  for (int isa = static_cast<int>(BestSupportedMatmulIsa()); isa >= 0; --isa) {
    const char* isa_name = MatmulIsaName(static_cast<MatmulIsa>(isa));
    for (const Format& f : kFormats) {
      if (f.layout != WeightLayout::kGguf && isa == 0) continue;
      for (int batch : {1, 8}) {
        const std::string name = "BM_KernelInCache/" + FormatName(f) +
                                 "/256x7168/batch:" + std::to_string(batch) + "/" + isa_name;
        benchmark::RegisterBenchmark(name.c_str(), BM_KernelInCache, f.type, f.layout, 256, 7168,
                                     batch, static_cast<MatmulIsa>(isa))
            ->Unit(benchmark::kMicrosecond)
            ->MinTime(0.2);
      }
      const std::string name = "BM_PackActivations/" + FormatName(f) + "/7168/" + isa_name;
      benchmark::RegisterBenchmark(name.c_str(), BM_PackActivations, f.type, f.layout, 7168,
                                   static_cast<MatmulIsa>(isa))
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(0.2);
    }
  }
}

}  // namespace
}  // namespace tritmoe

int main(int argc, char** argv) {
  tritmoe::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
