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
    case WeightLayout::kTq1AsTq2:
      return "tq1-as-tq2";
  }
  return "unknown";
}

// ---- TQ1_0 <-> TQ2_0 blocks (formats.md): both hold 256 codes q in {0,1,2} (value (q-1)*d) and
// an fp16 d, so a TQ1_0 block moves to TQ2_0 by re-filing its codes and copying d's bits.
constexpr int64_t kTq1Bytes = 54;  // qs[48] (5 codes a byte), qh[4] (4 codes a byte), d
constexpr int64_t kTq2Bytes = 66;  // qs[64] (4 codes a byte), d
constexpr int kPow3[5] = {1, 3, 9, 27, 81};

// Code n (0 = most significant) of a TQ1_0 byte, as DequantizeRow reads it: always 0, 1 or 2.
inline int Tq1Code(uint8_t byte, int n) {
  const auto q = static_cast<uint8_t>(byte * kPow3[n]);
  return (static_cast<uint16_t>(q) * 3) >> 8;
}

// The 256 codes of a TQ1_0 block in element order.
void Tq1Codes(const uint8_t* b, uint8_t* q) {
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 32; ++m) q[n * 32 + m] = Tq1Code(b[m], n);
    for (int m = 0; m < 16; ++m) q[160 + n * 16 + m] = Tq1Code(b[32 + m], n);
  }
  for (int n = 0; n < 4; ++n) {
    for (int j = 0; j < 4; ++j) q[240 + n * 4 + j] = Tq1Code(b[48 + j], n);
  }
}

// The TQ1_0 byte of up to five codes (most significant first; missing ones are 0), as the
// quantizer writes it: ceil(v * 256 / 243).
uint8_t Tq1Byte(const uint8_t* q, int stride, int count) {
  int v = 0;
  for (int n = 0; n < 5; ++n) v = v * 3 + (n < count ? q[n * stride] : 0);
  return static_cast<uint8_t>((v * 256 + 242) / 243);
}

void PackTq1AsTq2(const uint8_t* tq1, uint8_t* tq2) {
  uint8_t q[256];
  Tq1Codes(tq1, q);
  // TQ2_0 element 128 h + 32 l + m is bits 2l of qs[32 h + m].
  for (int h = 0; h < 2; ++h) {
    for (int m = 0; m < 32; ++m) {
      const uint8_t* e = q + 128 * h + m;
      tq2[32 * h + m] = static_cast<uint8_t>(e[0] | e[32] << 2 | e[64] << 4 | e[96] << 6);
    }
  }
  std::memcpy(tq2 + 64, tq1 + 52, 2);
}

// The inverse for blocks PackTq1AsTq2 wrote: the TQ1_0 bytes the quantizer writes for these codes
// (the original bytes; a hand-made TQ1_0 byte outside the quantizer's 243 values comes back as the
// one that decodes the same).
void UnpackTq1AsTq2(const uint8_t* tq2, uint8_t* tq1) {
  uint8_t q[256];
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 4; ++l) {
      for (int m = 0; m < 32; ++m) q[128 * h + 32 * l + m] = (tq2[32 * h + m] >> (2 * l)) & 3;
    }
  }
  for (int m = 0; m < 32; ++m) tq1[m] = Tq1Byte(q + m, 32, 5);
  for (int m = 0; m < 16; ++m) tq1[32 + m] = Tq1Byte(q + 160 + m, 16, 5);
  for (int j = 0; j < 4; ++j) tq1[48 + j] = Tq1Byte(q + 240 + j, 4, 4);
  std::memcpy(tq1 + 52, tq2 + 64, 2);
}

// How blocks of a repacked layout are made from GGUF blocks and back.
struct BlockCodec {
  int64_t gguf_bytes;    // one GGUF block
  int64_t layout_bytes;  // one block in the layout
  void (*pack)(const uint8_t* gguf, uint8_t* out);
  void (*unpack)(const uint8_t* in, uint8_t* gguf);
};

BlockCodec CodecFor(WeightLayout layout) {
  if (layout == WeightLayout::kTq1AsTq2) {
    return {kTq1Bytes, kTq2Bytes, PackTq1AsTq2, UnpackTq1AsTq2};
  }
  return {iq1s_quads::kIq1sBlockBytes, iq1s_quads::kBlockBytes, iq1s_quads::PackBlock,
          iq1s_quads::UnpackBlock};
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
  // TQ2_0's AVX-512 kernels run at memory speed, TQ1_0's are compute-bound (docs/PERF.md).
  if (type == GgmlType::kTQ1_0 && BestSupportedMatmulIsa() == MatmulIsa::kAvx512) {
    return WeightLayout::kTq1AsTq2;
  }
  return WeightLayout::kGguf;
}

bool LayoutSupports(WeightLayout layout, GgmlType type) {
  switch (layout) {
    case WeightLayout::kGguf:
      return true;
    case WeightLayout::kIq1sQuads:
      return type == GgmlType::kIQ1_S;
    case WeightLayout::kTq1AsTq2:
      return type == GgmlType::kTQ1_0;
  }
  return false;
}

int64_t LayoutRowBytes(GgmlType type, WeightLayout layout, int64_t cols) {
  if (layout == WeightLayout::kIq1sQuads) {
    return cols / iq1s_quads::kBlockElems * iq1s_quads::kBlockBytes;
  }
  if (layout == WeightLayout::kTq1AsTq2) return RowBytes(GgmlType::kTQ2_0, cols);
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
  const BlockCodec codec = CodecFor(layout);
  auto rows = [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t b = 0; b < blocks; ++b) {
        codec.pack(src + r * src_row + b * codec.gguf_bytes,
                   dst + r * dst_row + b * codec.layout_bytes);
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
  const BlockCodec codec = CodecFor(w.layout);
  const int64_t blocks = w.cols / GetTypeTraits(w.type).block_elems;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      codec.unpack(src + r * src_row + b * codec.layout_bytes,
                   dst + r * dst_row + b * codec.gguf_bytes);
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
  if (layout == WeightLayout::kTq1AsTq2) {
    DequantizeRow(GgmlType::kTQ2_0, src, dst, n);
    return;
  }
  const auto* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / iq1s_quads::kBlockElems; ++i) {
    iq1s_quads::DequantizeBlock(b + i * iq1s_quads::kBlockBytes, dst + i * iq1s_quads::kBlockElems);
  }
}

}  // namespace tritmoe
