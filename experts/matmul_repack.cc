// CPU weight layouts: choice, repack, unpack, row decode.
#include "experts/matmul_repack.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "experts/dequantize.h"
#include "experts/matmul_iq1s_quads.h"
#include "experts/matmul_isa.h"

namespace tritmoe {
namespace {

const char* LayoutName(WeightLayout layout) {
  switch (layout) {
    case WeightLayout::kGguf:
      return "gguf";
    case WeightLayout::kIq1sQuads:
      return "iq1s-quads";
  }
  return "unknown";
}

constexpr int64_t kAlign = 64;
// Copies of 2 MiB and more are aligned to and advised for transparent huge pages: the kernels
// stream through them (fewer TLB misses), and a repack at load time faults in 512x fewer pages.
constexpr int64_t kHugePage = int64_t{2} << 20;

}  // namespace

WeightLayout PreferredCpuLayout(GgmlType type) {
  // The quads kernels need vpmultishiftqb / vpermi2b (VBMI); without them grid lookups are as
  // fast as decoding fields, and the copy would only cost RAM.
  if (type == GgmlType::kIQ1_S && BestSupportedMatmulIsa() == MatmulIsa::kAvx512) {
    return WeightLayout::kIq1sQuads;
  }
  return WeightLayout::kGguf;
}

bool LayoutSupports(WeightLayout layout, GgmlType type) {
  switch (layout) {
    case WeightLayout::kGguf:
      return true;
    case WeightLayout::kIq1sQuads:
      return type == GgmlType::kIQ1_S;
  }
  return false;
}

int64_t LayoutRowBytes(GgmlType type, WeightLayout layout, int64_t cols) {
  if (layout == WeightLayout::kIq1sQuads) {
    return cols / iq1s_quads::kBlockElems * iq1s_quads::kBlockBytes;
  }
  return RowBytes(type, cols);
}

void RepackedWeights::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

absl::StatusOr<RepackedWeights> RepackWeights(const WeightView& w, WeightLayout layout,
                                              ThreadPool* pool) {
  const TypeTraits& traits = GetTypeTraits(w.type);
  if (w.layout != WeightLayout::kGguf) {
    return absl::InvalidArgumentError(absl::StrCat("RepackWeights: source is already in layout ",
                                                   LayoutName(w.layout), ", expected gguf"));
  }
  if (!LayoutSupports(layout, w.type)) {
    return absl::InvalidArgumentError(absl::StrCat("RepackWeights: layout ", LayoutName(layout),
                                                   " does not hold ", traits.name, " weights"));
  }
  if (w.rows < 0 || w.cols < 0 || w.cols % traits.block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RepackWeights: shape ", w.rows, " x ", w.cols,
                                                   " is not whole ", traits.name, " blocks of ",
                                                   traits.block_elems));
  }
  if (w.data == nullptr && w.rows * w.cols != 0) {
    return absl::InvalidArgumentError("RepackWeights: no data");
  }
  RepackedWeights out;
  const int64_t src_row = RowBytes(w.type, w.cols);
  const int64_t dst_row = LayoutRowBytes(w.type, layout, w.cols);
  out.bytes_ = dst_row * w.rows;
  const int64_t align = out.bytes_ >= kHugePage ? kHugePage : kAlign;
  const int64_t alloc = (std::max<int64_t>(out.bytes_, 1) + align - 1) / align * align;
  out.data_.reset(static_cast<uint8_t*>(std::aligned_alloc(align, alloc)));
  if (out.data_ == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("RepackWeights: cannot allocate ", out.bytes_, " bytes"));
  }
  if (align == kHugePage) (void)madvise(out.data_.get(), alloc, MADV_HUGEPAGE);  // best effort
  out.view_ = WeightView{w.type, out.data_.get(), w.rows, w.cols, layout};
  if (layout == WeightLayout::kGguf) {
    std::memcpy(out.data_.get(), w.data, out.bytes_);
    return out;
  }
  const auto* src = static_cast<const uint8_t*>(w.data);
  uint8_t* dst = out.data_.get();
  const int64_t blocks = w.cols / traits.block_elems;
  auto rows = [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t b = 0; b < blocks; ++b) {
        iq1s_quads::PackBlock(src + r * src_row + b * iq1s_quads::kIq1sBlockBytes,
                              dst + r * dst_row + b * iq1s_quads::kBlockBytes);
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(w.rows, 64, rows);
  } else {
    rows(0, w.rows, 0);
  }
  return out;
}

absl::Status UnpackWeights(const WeightView& w, void* gguf) {
  const int64_t dst_row = RowBytes(w.type, w.cols);
  if (w.layout == WeightLayout::kGguf) {
    std::memcpy(gguf, w.data, dst_row * w.rows);
    return absl::OkStatus();
  }
  if (!LayoutSupports(w.layout, w.type)) {
    return absl::InvalidArgumentError(absl::StrCat("UnpackWeights: layout ", LayoutName(w.layout),
                                                   " does not hold ", GetTypeTraits(w.type).name,
                                                   " weights"));
  }
  const int64_t src_row = LayoutRowBytes(w.type, w.layout, w.cols);
  const auto* src = static_cast<const uint8_t*>(w.data);
  auto* dst = static_cast<uint8_t*>(gguf);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t b = 0; b < w.cols / iq1s_quads::kBlockElems; ++b) {
      iq1s_quads::UnpackBlock(src + r * src_row + b * iq1s_quads::kBlockBytes,
                              dst + r * dst_row + b * iq1s_quads::kIq1sBlockBytes);
    }
  }
  return absl::OkStatus();
}

void DequantizeLayoutRow(GgmlType type, WeightLayout layout, const void* src, float* dst,
                         int64_t n) {
  if (layout == WeightLayout::kGguf) {
    DequantizeRow(type, src, dst, n);
    return;
  }
  const auto* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / iq1s_quads::kBlockElems; ++i) {
    iq1s_quads::DequantizeBlock(b + i * iq1s_quads::kBlockBytes, dst + i * iq1s_quads::kBlockElems);
  }
}

}  // namespace tritmoe
