// Host conversion between GGUF rows and the GPU tile layout (quant_gemv_launch.h). The kernels'
// decoders in quant_gemv.cu document each type's tile; this file is the executable form of the
// same layouts. Except for TQ1_0 (trits re-encoded per lane), every layout is a permutation of
// the tile's bits, described as a list of (row, GGUF bit, tile bit, length) fields built once
// per type and checked to be a bijection.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "experts/cuda/quant_gemv.h"
#include "experts/cuda/quant_gemv_launch.h"
#include "experts/quant_tables.h"

namespace tritmoe {
namespace {

using gpu_internal::kTileCols;
using gpu_internal::kTileRows;

// GGUF bytes of 256 elements of one row (a K-quant block, or 8 Q8_0 blocks).
int ChunkBytes(GgmlType type) { return gpu_internal::TileBytes(static_cast<uint32_t>(type)) / 16; }

struct Field {
  int row;        // 0..15 within the tile
  int chunk_bit;  // bit offset within the row's 256-element chunk
  int tile_bit;   // bit offset within the tile
  int nbits;      // <= 56
};

// Bit helpers on buffers with at least 8 bytes of slack after the last addressed byte.
inline uint64_t ReadBits(const uint8_t* p, int bit, int n) {
  uint64_t v;
  std::memcpy(&v, p + bit / 8, 8);
  return (v >> (bit % 8)) & ((uint64_t{1} << n) - 1);
}
inline void WriteBits(uint8_t* p, int bit, int n, uint64_t value) {
  uint64_t v;
  std::memcpy(&v, p + bit / 8, 8);
  const uint64_t mask = ((uint64_t{1} << n) - 1) << (bit % 8);
  v = (v & ~mask) | ((value << (bit % 8)) & mask);
  std::memcpy(p + bit / 8, &v, 8);
}

// Collects single-bit correspondences, then merges runs into fields.
class FieldBuilder {
 public:
  explicit FieldBuilder(int tile_bytes) : owner_(tile_bytes * 8, -1) {}
  void Bits(int row, int chunk_bit, int tile_bit, int n) {
    for (int i = 0; i < n; ++i) {
      TM_CHECK(owner_[tile_bit + i] < 0) << "tile bit " << tile_bit + i << " mapped twice";
      owner_[tile_bit + i] = row * (1 << 20) + chunk_bit + i;
    }
  }
  void Bytes(int row, int chunk_byte, int tile_byte, int n) {
    Bits(row, 8 * chunk_byte, 8 * tile_byte, 8 * n);
  }
  std::vector<Field> Build() const {
    std::vector<Field> fields;
    for (int b = 0; b < static_cast<int>(owner_.size()); ++b) {
      TM_CHECK(owner_[b] >= 0) << "tile bit " << b << " unmapped";
      const int row = owner_[b] >> 20, cbit = owner_[b] & ((1 << 20) - 1);
      if (!fields.empty()) {
        Field& f = fields.back();
        if (f.row == row && f.chunk_bit + f.nbits == cbit && f.tile_bit + f.nbits == b &&
            f.nbits < 56) {
          ++f.nbits;
          continue;
        }
      }
      fields.push_back({row, cbit, b, 1});
    }
    return fields;
  }

 private:
  std::vector<int> owner_;  // row << 20 | chunk bit, per tile bit
};

// Maps bit s of a per-lane bit string stored in up to three regions (16-, 4- or 8-, 2-byte
// slots per lane) to its tile bit.
struct LaneString {
  int base[3];  // region byte offsets
  int slot[3];  // bytes per lane in each region
  int TileBit(int lane, int s) const {
    for (int r = 0; r < 3; ++r) {
      if (s < 8 * slot[r]) return 8 * (base[r] + lane * slot[r]) + s;
      s -= 8 * slot[r];
    }
    TM_CHECK(false) << "lane string bit out of range";
    return 0;
  }
};

std::vector<Field> BuildFields(GgmlType type) {
  const int tile_bytes = gpu_internal::TileBytes(static_cast<uint32_t>(type));
  FieldBuilder fb(tile_bytes);
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int rsel = 0; rsel < 2; ++rsel) {
      const int row = g + 8 * rsel;
      const bool group_leader = t == 0;  // per-group data is mapped once
      switch (type) {
        case GgmlType::kIQ1_S: {
          const LaneString str{{0, 512, 640}, {16, 4, 2}};
          for (int ib = 0; ib < 8; ++ib) {
            const int n = 2 * ib + rsel;
            for (int i = 0; i < 8; ++i) {
              fb.Bits(row, 8 * (2 + 4 * ib + t) + i, str.TileBit(lane, 11 * n + i), 1);
            }
            for (int i = 0; i < 3; ++i) {
              fb.Bits(row, 8 * (34 + 2 * ib) + 3 * t + i, str.TileBit(lane, 11 * n + 8 + i), 1);
            }
            if (group_leader) fb.Bits(row, 8 * (34 + 2 * ib) + 12, 8 * (704 + 8 * g) + 4 * n, 4);
          }
          if (group_leader) fb.Bytes(row, 0, 768 + 4 * g + 2 * rsel, 2);
          break;
        }
        case GgmlType::kTQ2_0:
          for (int h = 0; h < 2; ++h)
            fb.Bytes(row, 32 * h + 8 * t, 32 * lane + 16 * rsel + 8 * h, 8);
          if (group_leader) fb.Bytes(row, 64, 1024 + 4 * g + 2 * rsel, 2);
          break;
        case GgmlType::kQ8_0:
          for (int ib = 0; ib < 8; ++ib) {
            fb.Bytes(row, 34 * ib + 2 + 8 * t, 512 * ib + 16 * lane + 8 * rsel, 8);
            if (group_leader) fb.Bytes(row, 34 * ib, 4096 + 32 * g + 2 * (2 * ib + rsel), 2);
          }
          break;
        case GgmlType::kQ4_K:
          for (int c = 0; c < 4; ++c)
            fb.Bytes(row, 16 + 32 * c + 8 * t, 512 * c + 16 * lane + 8 * rsel, 8);
          if (group_leader) fb.Bytes(row, 0, 2048 + 32 * g + 16 * rsel, 16);
          break;
        case GgmlType::kQ6_K:
          for (int h = 0; h < 2; ++h) {
            const int src[3] = {64 * h + 8 * t, 64 * h + 32 + 8 * t, 128 + 32 * h + 8 * t};
            for (int k = 0; k < 3; ++k)
              fb.Bytes(row, src[k], 512 * (3 * h + k) + 16 * lane + 8 * rsel, 8);
          }
          if (group_leader) {
            fb.Bytes(row, 192, 3072 + 32 * g + 16 * rsel, 16);
            fb.Bytes(row, 208, 3328 + 4 * g + 2 * rsel, 2);
          }
          break;
        case GgmlType::kIQ2_XXS: {
          const LaneString str{{512, 768, 896}, {8, 4, 2}};
          for (int ib = 0; ib < 8; ++ib) {
            const int n = 2 * ib + rsel;
            const int a1_bit = 8 * (2 + 8 * ib + 4);
            fb.Bytes(row, 2 + 8 * ib + t, 16 * lane + n, 1);
            for (int i = 0; i < 7; ++i)
              fb.Bits(row, a1_bit + 7 * t + i, str.TileBit(lane, 7 * n + i), 1);
            if (group_leader) fb.Bits(row, a1_bit + 28, 8 * (960 + 8 * g) + 4 * n, 4);
          }
          if (group_leader) fb.Bytes(row, 0, 1024 + 4 * g + 2 * rsel, 2);
          break;
        }
        default:
          TM_CHECK(false) << "no field layout for type " << static_cast<int>(type);
      }
    }
  }
  std::vector<Field> fields = fb.Build();
  // Every GGUF bit must appear exactly once.
  std::vector<int> seen(16 * ChunkBytes(type) * 8, 0);
  for (const Field& f : fields) {
    for (int i = 0; i < f.nbits; ++i) ++seen[f.row * ChunkBytes(type) * 8 + f.chunk_bit + i];
  }
  for (int s : seen) TM_CHECK(s == 1) << "GGUF bit not mapped exactly once";
  return fields;
}

const std::vector<Field>& FieldsFor(GgmlType type) {
  static std::mutex mu;
  static std::vector<std::pair<GgmlType, std::vector<Field>>> cache;
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& [t, f] : cache) {
    if (t == type) return f;
  }
  cache.emplace_back(type, BuildFields(type));
  return cache.back().second;
}

// TQ1_0: trit n (0 = most significant) of a base-3 byte, as the reference decoder.
inline int Trit(uint8_t byte, int n) {
  const uint8_t q = static_cast<uint8_t>(byte * tables::kPow3Tq[n]);
  return (static_cast<uint16_t>(q) * 3) >> 8;
}
// The canonical byte of 5 trits (t[0] most significant), as llama.cpp's TQ1_0 quantizer.
inline uint8_t EncodeTrits(const int (&t)[5]) {
  int v = 0;
  for (int n = 0; n < 5; ++n) v = v * 3 + t[n];
  return static_cast<uint8_t>((v * 256 + 242) / 243);
}

// TQ1_0 GGUF element e of a block <-> its trit.
int Tq1GgufTrit(const uint8_t* blk, int e) {
  if (e < 160) return Trit(blk[e % 32], e / 32);
  if (e < 240) return Trit(blk[32 + (e - 160) % 16], (e - 160) / 16);
  return Trit(blk[48 + (e - 240) % 4], (e - 240) / 4);
}
// Element of lane t's register rho, byte b (see Tq1 in quant_gemv.cu).
inline int Tq1Element(int t, int rho, int b) { return 32 * (rho / 2) + 8 * t + 4 * (rho % 2) + b; }

void RepackTileTq1(const uint8_t* const (&rows)[16], uint8_t* tile) {
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int rsel = 0; rsel < 2; ++rsel) {
      const uint8_t* blk = rows[g + 8 * rsel];
      for (int i = 0; i < 3; ++i) {
        uint8_t* out =
            i < 2 ? tile + 16 * lane + 8 * rsel + 4 * i : tile + 512 + 8 * lane + 4 * rsel;
        for (int k = 0; k < 4; ++k) {
          int tr[5];
          for (int n = 0; n < 5; ++n) tr[n] = Tq1GgufTrit(blk, Tq1Element(t, 5 * i + n, k));
          out[k] = EncodeTrits(tr);
        }
      }
      int tr[5] = {0, 0, 0, 0, 0};
      for (int n = 0; n < 4; ++n) tr[n] = Tq1GgufTrit(blk, Tq1Element(t, 15, n));
      tile[768 + 2 * lane + rsel] = EncodeTrits(tr);
      if (t == 0) std::memcpy(tile + 832 + 4 * g + 2 * rsel, blk + 52, 2);
    }
  }
}

void UnpackTileTq1(const uint8_t* tile, uint8_t* const (&rows)[16]) {
  int trits[16][256];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int rsel = 0; rsel < 2; ++rsel) {
      const int row = g + 8 * rsel;
      for (int i = 0; i < 3; ++i) {
        const uint8_t* in =
            i < 2 ? tile + 16 * lane + 8 * rsel + 4 * i : tile + 512 + 8 * lane + 4 * rsel;
        for (int k = 0; k < 4; ++k) {
          for (int n = 0; n < 5; ++n) trits[row][Tq1Element(t, 5 * i + n, k)] = Trit(in[k], n);
        }
      }
      for (int n = 0; n < 4; ++n)
        trits[row][Tq1Element(t, 15, n)] = Trit(tile[768 + 2 * lane + rsel], n);
      if (t == 0) std::memcpy(rows[row] + 52, tile + 832 + 4 * g + 2 * rsel, 2);
    }
  }
  for (int row = 0; row < 16; ++row) {
    uint8_t* blk = rows[row];
    for (int m = 0; m < 32; ++m) {
      int tr[5];
      for (int n = 0; n < 5; ++n) tr[n] = trits[row][32 * n + m];
      blk[m] = EncodeTrits(tr);
    }
    for (int m = 0; m < 16; ++m) {
      int tr[5];
      for (int n = 0; n < 5; ++n) tr[n] = trits[row][160 + 16 * n + m];
      blk[32 + m] = EncodeTrits(tr);
    }
    for (int j = 0; j < 4; ++j) {
      int tr[5] = {0, 0, 0, 0, 0};
      for (int n = 0; n < 4; ++n) tr[n] = trits[row][240 + 4 * n + j];
      blk[48 + j] = EncodeTrits(tr);
    }
  }
}

absl::Status CheckShape(GgmlType type, int64_t rows, int64_t cols) {
  if (!GpuGemvSupports(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU GEMV does not support type ", GetTypeTraits(type).name));
  }
  if (rows <= 0 || cols <= 0 || cols % kTileCols != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU GEMV needs rows > 0 and cols % 256 == 0, got ", rows, " x ", cols));
  }
  return absl::OkStatus();
}

}  // namespace

bool GpuGemvSupports(GgmlType type) {
  return gpu_internal::TileBytes(static_cast<uint32_t>(type)) > 0;
}

absl::StatusOr<int64_t> GpuWeightBytes(GgmlType type, int64_t rows, int64_t cols) {
  if (absl::Status s = CheckShape(type, rows, cols); !s.ok()) return s;
  const int64_t n_rg = (rows + kTileRows - 1) / kTileRows;
  return n_rg * (cols / kTileCols) * gpu_internal::TileBytes(static_cast<uint32_t>(type));
}

absl::Status RepackRowsForGpu(GgmlType type, const void* src, int64_t rows, int64_t cols,
                              int64_t row_begin, int64_t row_end, void* dst) {
  if (absl::Status s = CheckShape(type, rows, cols); !s.ok()) return s;
  if (row_begin % kTileRows != 0 || row_begin < 0 || row_end > rows || row_begin > row_end ||
      (row_end % kTileRows != 0 && row_end != rows)) {
    return absl::InvalidArgumentError(absl::StrCat("row range [", row_begin, ", ", row_end,
                                                   ") is not made of whole 16-row groups"));
  }
  const int chunk = ChunkBytes(type);
  const int tile_bytes = gpu_internal::TileBytes(static_cast<uint32_t>(type));
  const int64_t row_bytes = RowBytes(type, cols);
  const int64_t nkb = cols / kTileCols;
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const std::vector<Field>* fields = type == GgmlType::kTQ1_0 ? nullptr : &FieldsFor(type);
  std::vector<uint8_t> buf(16 * (chunk + 8) + tile_bytes + 8);
  uint8_t* tile = buf.data() + 16 * (chunk + 8);
  const int64_t rg_end = (row_end + kTileRows - 1) / kTileRows;
  for (int64_t rg = row_begin / kTileRows; rg < rg_end; ++rg) {
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const uint8_t* rp[16];
      for (int i = 0; i < 16; ++i) {
        uint8_t* b = buf.data() + i * (chunk + 8);
        const int64_t r = rg * kTileRows + i;
        if (r < rows) {
          std::memcpy(b, in + r * row_bytes + kb * chunk, chunk);
        } else {
          std::memset(b, 0, chunk);
        }
        rp[i] = b;
      }
      std::memset(tile, 0, tile_bytes);
      if (fields == nullptr) {
        RepackTileTq1(rp, tile);
      } else {
        for (const Field& f : *fields) {
          WriteBits(tile, f.tile_bit, f.nbits, ReadBits(rp[f.row], f.chunk_bit, f.nbits));
        }
      }
      std::memcpy(out + (rg * nkb + kb) * tile_bytes, tile, tile_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status RepackForGpu(GgmlType type, const void* src, int64_t rows, int64_t cols, void* dst) {
  return RepackRowsForGpu(type, src, rows, cols, 0, rows, dst);
}

absl::Status UnpackGpuLayout(GgmlType type, const void* packed, int64_t rows, int64_t cols,
                             void* dst) {
  if (absl::Status s = CheckShape(type, rows, cols); !s.ok()) return s;
  const int chunk = ChunkBytes(type);
  const int tile_bytes = gpu_internal::TileBytes(static_cast<uint32_t>(type));
  const int64_t row_bytes = RowBytes(type, cols);
  const int64_t nkb = cols / kTileCols;
  const auto* in = static_cast<const uint8_t*>(packed);
  auto* out = static_cast<uint8_t*>(dst);
  const std::vector<Field>* fields = type == GgmlType::kTQ1_0 ? nullptr : &FieldsFor(type);
  std::vector<uint8_t> buf(16 * (chunk + 8) + tile_bytes + 8);
  uint8_t* tile = buf.data() + 16 * (chunk + 8);
  const int64_t n_rg = (rows + kTileRows - 1) / kTileRows;
  for (int64_t rg = 0; rg < n_rg; ++rg) {
    for (int64_t kb = 0; kb < nkb; ++kb) {
      std::memcpy(tile, in + (rg * nkb + kb) * tile_bytes, tile_bytes);
      std::fill(buf.begin(), buf.begin() + 16 * (chunk + 8), 0);
      uint8_t* rp[16];
      for (int i = 0; i < 16; ++i) rp[i] = buf.data() + i * (chunk + 8);
      if (fields == nullptr) {
        UnpackTileTq1(tile, rp);
      } else {
        for (const Field& f : *fields) {
          WriteBits(rp[f.row], f.chunk_bit, f.nbits, ReadBits(tile, f.tile_bit, f.nbits));
        }
      }
      for (int i = 0; i < 16; ++i) {
        const int64_t r = rg * kTileRows + i;
        if (r < rows) std::memcpy(out + r * row_bytes + kb * chunk, rp[i], chunk);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
