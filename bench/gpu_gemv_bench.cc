// gpu_gemv_bench: HBM read bandwidth vs the quantized GEMV kernels (experts/cuda/quant_gemv.h).
//
//   gpu_gemv_bench [--types=IQ1_S,TQ1_0,...] [--tokens=1,2,4,8] [--experts=64] [--pool_gb=1.0]
//                  [--iters=40]
//
// For each type and the DeepSeek expert shapes (gate/up 2048x7168, down 7168x2048) it times
//  * "single": one matrix per launch (a dense decode GEMV), cycling through >= pool_gb of copies
//    so that every call reads from HBM;
//  * "grouped": one GpuExpertGemv launch over `experts` experts of that shape, each with `tok`
//    (token, expert) pairs (the decode-time routed MoE), also cycling through >= pool_gb.
// Launches are captured in a CUDA graph of `iters` calls and replayed (median of 7 replays), so
// the numbers are GPU time per call without host launch overhead. GB/s counts the weight bytes
// of the GGUF/tile layout (activations and outputs are < 1% of the traffic) and is compared
// with the measured read bandwidth of a plain streaming kernel.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "base/cuda_check.h"
#include "experts/cuda/device_buffer.h"
#include "experts/cuda/quant_gemv.h"
#include "experts/fp16.h"
#include "experts/quant_type.h"

namespace tritmoe::bench {

double MeasureReadBandwidthGBs(size_t bytes, int reps, bool no_allocate);  // gpu_gemv_bench.cu

namespace {

struct Options {
  std::vector<GgmlType> types = {GgmlType::kIQ1_S,   GgmlType::kTQ1_0, GgmlType::kTQ2_0,
                                 GgmlType::kIQ2_XXS, GgmlType::kQ4_K,  GgmlType::kQ6_K,
                                 GgmlType::kQ8_0};
  std::vector<int> tokens = {1, 2, 4, 8};
  int experts = 64;
  double pool_gb = 1.0;
  int iters = 40;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const size_t n = std::strlen(name);
      return a.compare(0, n, name) == 0 ? a.c_str() + n : nullptr;
    };
    if (const char* v = value("--types=")) {
      o.types.clear();
      for (absl::string_view s : absl::StrSplit(v, ',')) {
        const absl::StatusOr<GgmlType> t = ParseGgmlType(std::string(s));
        TM_CHECK(t.ok()) << t.status();
        o.types.push_back(*t);
      }
    } else if (const char* v = value("--tokens=")) {
      o.tokens.clear();
      for (absl::string_view s : absl::StrSplit(v, ',')) {
        int n = 0;
        TM_CHECK(absl::SimpleAtoi(s, &n) && n > 0) << "bad --tokens";
        o.tokens.push_back(n);
      }
    } else if (const char* v = value("--experts=")) {
      TM_CHECK(absl::SimpleAtoi(v, &o.experts) && o.experts > 0);
    } else if (const char* v = value("--pool_gb=")) {
      TM_CHECK(absl::SimpleAtod(v, &o.pool_gb) && o.pool_gb > 0);
    } else if (const char* v = value("--iters=")) {
      TM_CHECK(absl::SimpleAtoi(v, &o.iters) && o.iters > 0);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      std::exit(2);
    }
  }
  return o;
}

std::vector<uint8_t> RandomRows(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const TypeTraits& tr = GetTypeTraits(type);
  std::vector<uint8_t> data(rows * RowBytes(type, cols));
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint32_t v = rng();
    std::memcpy(&data[i], &v, std::min<size_t>(4, data.size() - i));
  }
  int scale_off = 0;
  switch (type) {
    case GgmlType::kQ6_K:
      scale_off = 208;
      break;
    case GgmlType::kTQ1_0:
      scale_off = 52;
      break;
    case GgmlType::kTQ2_0:
      scale_off = 64;
      break;
    default:
      break;
  }
  const uint16_t h = Fp32ToFp16(0.01f);
  for (size_t b = 0; b < data.size() / tr.block_bytes; ++b) {
    std::memcpy(&data[b * tr.block_bytes + scale_off], &h, 2);
  }
  return data;
}

// Median GPU milliseconds of one replay of a graph holding `body`'s launches.
template <class Body>
double TimeGraphMs(cudaStream_t stream, Body&& body) {
  body();  // warm-up outside the graph (first-call setup, occupancy queries)
  TM_CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  TM_CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  body();
  TM_CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  TM_CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CudaEvent start, stop;
  std::vector<float> ms;
  for (int r = 0; r < 9; ++r) {
    start.Record(stream);
    TM_CHECK_CUDA(cudaGraphLaunch(exec, stream));
    stop.Record(stream);
    stop.Synchronize();
    if (r >= 2) ms.push_back(stop.MillisSince(start));
  }
  TM_CHECK_CUDA(cudaGraphExecDestroy(exec));
  TM_CHECK_CUDA(cudaGraphDestroy(graph));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void Check(const absl::Status& s) { TM_CHECK(s.ok()) << s; }

}  // namespace

int Main(int argc, char** argv) {
  const Options opt = ParseArgs(argc, argv);
  int dev = 0;
  TM_CHECK_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  TM_CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s, %d SMs, L2 %.0f MB, %.1f GB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6, prop.totalGlobalMem / 1e9);

  const double bw_ldg = MeasureReadBandwidthGBs(size_t{4} << 30, 10, false);
  const double bw_na = MeasureReadBandwidthGBs(size_t{4} << 30, 10, true);
  const double bw = std::max(bw_ldg, bw_na);
  std::printf(
      "HBM read bandwidth (4 GiB, 16-byte loads): %.0f GB/s (ld.global.nc), %.0f GB/s "
      "(L1::no_allocate); ceiling used below: %.0f GB/s\n\n",
      bw_ldg, bw_na, bw);

  CudaStream stream;
  std::mt19937 rng(42);
  const int max_tok = *std::max_element(opt.tokens.begin(), opt.tokens.end());
  std::printf("%-8s %-10s %-12s %4s %10s %9s %7s\n", "type", "shape", "mode", "tok", "us/call",
              "GB/s", "%BW");
  struct Shape {
    int64_t rows, cols;
    const char* name;
  };
  const Shape shapes[] = {{2048, 7168, "2048x7168"}, {7168, 2048, "7168x2048"}};
  for (GgmlType type : opt.types) {
    const char* tname = GetTypeTraits(type).name;
    for (const Shape& sh : shapes) {
      // One random matrix, repacked on the host (timed) and replicated on the device.
      const std::vector<uint8_t> rows = RandomRows(type, sh.rows, sh.cols, rng);
      const int64_t bytes = *GpuWeightBytes(type, sh.rows, sh.cols);
      std::vector<uint8_t> packed(bytes);
      const auto t0 = std::chrono::steady_clock::now();
      Check(RepackForGpu(type, rows.data(), sh.rows, sh.cols, packed.data()));
      const double repack_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const int64_t stride = (bytes + 255) / 256 * 256;
      const int64_t sets = std::max<int64_t>(
          2, static_cast<int64_t>(std::ceil(opt.pool_gb * 1e9 / (opt.experts * bytes))));
      const int64_t n_mat = std::max<int64_t>(
          sets * opt.experts, static_cast<int64_t>(std::ceil(opt.pool_gb * 1e9 / bytes)));
      DeviceBuffer pool(n_mat * stride);
      pool.CopyFromHost(packed.data(), bytes);
      for (int64_t have = 1; have < n_mat;) {  // doubling device-to-device copies
        const int64_t n = std::min(have, n_mat - have);
        TM_CHECK_CUDA(cudaMemcpy(pool.as<uint8_t>() + have * stride, pool.get(), n * stride,
                                 cudaMemcpyDeviceToDevice));
        have += n;
      }

      // Activations: one row per (expert, pair) for the grouped runs; the first rows for dense.
      const int64_t x_rows = static_cast<int64_t>(opt.experts) * max_tok;
      std::vector<float> x(x_rows * sh.cols);
      std::normal_distribution<float> nd;
      for (float& v : x) v = nd(rng);
      DeviceBuffer dx(x.size() * 4), ws(GpuActivationBytes(x_rows, sh.cols));
      DeviceBuffer dy(x_rows * sh.rows * 4);
      dx.CopyFromHost(x.data(), x.size() * 4);
      GpuActivations act_all;
      Check(QuantizeActivationsGpu(dx.as<float>(), x_rows, sh.cols, ws.get(), ws.bytes(),
                                   stream.get(), &act_all));

      for (int tok : opt.tokens) {
        // Dense, one matrix per launch (the first tok activation rows).
        GpuActivations act = act_all;
        act.n_rows = tok;
        int64_t next = 0;
        const double ms_single = TimeGraphMs(stream.get(), [&] {
          for (int i = 0; i < opt.iters; ++i) {
            GpuWeightView w{type, pool.as<uint8_t>() + (next++ % n_mat) * stride, sh.rows, sh.cols};
            Check(GpuGemv(w, act, dy.as<float>(), stream.get()));
          }
        });
        const double us1 = ms_single * 1e3 / opt.iters;
        std::printf("%-8s %-10s %-12s %4d %10.2f %9.0f %6.1f%%\n", tname, sh.name, "single", tok,
                    us1, bytes / (us1 * 1e-6) / 1e9, 100.0 * bytes / (us1 * 1e-6) / 1e9 / bw);

        // Activation quantization alone (tok rows).
        const double ms_q = TimeGraphMs(stream.get(), [&] {
          GpuActivations tmp;
          for (int i = 0; i < opt.iters; ++i) {
            Check(QuantizeActivationsGpu(dx.as<float>(), tok, sh.cols, ws.get(), ws.bytes(),
                                         stream.get(), &tmp));
          }
        });
        std::printf("%-8s %-10s %-12s %4d %10.2f\n", tname, sh.name, "quantize-x", tok,
                    ms_q * 1e3 / opt.iters);

        // Grouped: `experts` experts with `tok` pairs each, pair p reads activation row p.
        std::vector<int32_t> offsets(opt.experts + 1);
        for (int e = 0; e <= opt.experts; ++e) offsets[e] = e * tok;
        DeviceBuffer doff(offsets.size() * 4);
        doff.CopyFromHost(offsets.data(), offsets.size() * 4);
        GpuExpertRouting routing;
        routing.expert_offsets = doff.as<int32_t>();
        routing.max_pairs_per_expert = tok;
        int64_t set = 0;
        const double ms_grouped = TimeGraphMs(stream.get(), [&] {
          for (int i = 0; i < opt.iters; ++i) {
            GpuWeightView w{type,        pool.as<uint8_t>() + (set++ % sets) * opt.experts * stride,
                            sh.rows,     sh.cols,
                            opt.experts, stride};
            Check(GpuExpertGemv(w, act_all, routing, dy.as<float>(), stream.get()));
          }
        });
        const double usg = ms_grouped * 1e3 / opt.iters;
        const double gb = static_cast<double>(bytes) * opt.experts / (usg * 1e-6) / 1e9;
        char mode[32];
        std::snprintf(mode, sizeof(mode), "grouped x%d", opt.experts);
        std::printf("%-8s %-10s %-12s %4d %10.2f %9.0f %6.1f%%\n", tname, sh.name, mode, tok, usg,
                    gb, 100.0 * gb / bw);
      }
      std::printf("%-8s %-10s host repack: %.0f MB/s (single thread)\n", tname, sh.name,
                  bytes / repack_s / 1e6);
    }
  }
  return 0;
}

}  // namespace tritmoe::bench

int main(int argc, char** argv) { return tritmoe::bench::Main(argc, argv); }
