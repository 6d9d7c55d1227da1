// IQ1_S "quads": a lossless CPU layout of IQ1_S weights that decodes without grid lookups.
//
// An IQ1_S block (formats.md §2.9) stores 256 weights d·(2s+1)·(g + δ), g ∈ {-1, 0, 1}, as 32
// indices into a 2048-entry grid. Gathering grid entries is what limits the CPU kernels, so this
// layout stores the ternary values themselves, four to a 7-bit base-3 number, 64 bytes per 256
// weights (IQ1_S: 50), and keeps d, the 3-bit scales and the delta signs bit for bit. The ternary
// values of a sub-block whose δ is -1/8 are stored negated: its weights are
// d·(2s+1)·(g - 1/8) = -d·(2s+1)·(-g + 1/8), so every sub-block reads as ±(2s+1)·(g' + 1/8) with
// g' = ±g, and a kernel needs no per-sub-block δ (8·(g' + 1/8) = 8u' - 7, u' = g' + 1):
//
//   qword k (bytes 8k..8k+7, little endian) = sub-block k (elements 32k..32k+31), k = 0..7:
//     8 fields of 7 bits, field j = Σ_{n=0..3} u'(32k + 4j + n)·3^n with u' = g' + 1 ∈ {0, 1, 2},
//     g' = g, or -g when the sub-block's δ is -1/8 (so field < 81, and negating is 80 - field),
//     at bits FieldShift(k, j) = 7j, or 8 + 7j in qword 1;
//   the other 8 bits of each qword (the "meta" bits):
//     bytes 7..8 (top byte of qword 0, bottom byte of qword 1): the fp16 d;
//     bits 56..59 of qword k >= 2: nibble of sub-block k;  bits 60..63 of qwords 2 and 3: the
//     nibbles of sub-blocks 0 and 1;  a nibble = scale s (bits 0..2) | delta sign << 3 (set:
//     δ = -1/8, else +1/8);  bits 60..63 of qwords 4..7 are 0.
//
// Why this shape: with VBMI, one vpmultishiftqb puts field j of qword k in byte 8k + j, and a
// 128-entry byte table (vpermi2b) per digit n turns the 64 fields into 64 codes; byte p of digit
// plane n is element 4p + n, and each 4-byte lane holds one sub-block's 16 consecutive elements,
// so sub-block scales apply per lane. d sits in one 16-bit word, read with one scalar load (put
// together from four nibbles it cost the kernel more than the rest of the block's decode). The
// grid values are recovered exactly (the grid's 2048 points are distinct), so UnpackBlock returns
// the original IQ1_S bytes.
#pragma once

#include <cstdint>

namespace tritmoe::iq1s_quads {

inline constexpr int kBlockElems = 256;
inline constexpr int kBlockBytes = 64;
// IQ1_S's own block size, for the byte counts of the GGUF side.
inline constexpr int kIq1sBlockBytes = 50;

// Bit offset of field j (0..7) in qword k (0..7), and where the nibble of sub-block k lives:
// qword MetaQword(k), bits MetaShift(k)..MetaShift(k)+3. d is the uint16 at byte kDOffset.
inline constexpr int FieldShift(int k, int j) { return 7 * j + (k == 1 ? 8 : 0); }
inline constexpr int MetaQword(int k) { return k < 2 ? k + 2 : k; }
inline constexpr int MetaShift(int k) { return k < 2 ? 60 : 56; }
inline constexpr int kDOffset = 7;

// Field j of qword k of a quads block, as stored (negated where the sub-block's δ is -1/8).
inline uint32_t Field(const uint8_t* block, int k, int j);
// u = g + 1 ∈ {0, 1, 2} of element i (0..255) of a quads block (the IQ1_S value, not negated).
int Code(const uint8_t* block, int i);
// The fp16 bits of d, the scale s and the delta-sign bit of sub-block k.
uint16_t DBits(const uint8_t* block);
int Scale(const uint8_t* block, int k);
bool DeltaNegative(const uint8_t* block, int k);

// One IQ1_S block (50 bytes) <-> one quads block (64 bytes). Exact both ways for every bit pattern.
void PackBlock(const uint8_t* iq1s, uint8_t* quads);
void UnpackBlock(const uint8_t* quads, uint8_t* iq1s);

// y[i] = d·(2s+1)·(u - 1 + δ) for one block, the same float operations as DequantizeRow(IQ1_S).
void DequantizeBlock(const uint8_t* quads, float* y);

inline uint32_t Field(const uint8_t* block, int k, int j) {
  uint64_t q = 0;
  for (int b = 7; b >= 0; --b) q = (q << 8) | block[8 * k + b];
  return static_cast<uint32_t>(q >> FieldShift(k, j)) & 127;
}

}  // namespace tritmoe::iq1s_quads
