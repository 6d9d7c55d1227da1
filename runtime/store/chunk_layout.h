// How the model store cuts a tensor into checksummed chunks. A tensor is a run of units: one per
// matrix of a 3-D (or 4-D) tensor, so that each expert's matrix of a GGUF expert tensor is made of
// whole chunks and reading one expert never reads or checks a neighbour's bytes; the whole tensor
// for 1-D and 2-D tensors. Each unit is cut into chunks of chunk_bytes from its start, the last
// one shorter.
#pragma once

#include <algorithm>
#include <cstdint>

namespace tritmoe {

struct ChunkLayout {
  uint64_t tensor_bytes = 0;
  uint64_t unit_bytes = 0;  // divides tensor_bytes
  uint64_t chunk_bytes = 0;

  // ne: the tensor's dims; units are its ne[2] * ne[3] matrices.
  static ChunkLayout For(uint64_t tensor_bytes, int64_t ne2, int64_t ne3, uint64_t chunk_bytes) {
    const uint64_t units = static_cast<uint64_t>(std::max<int64_t>(1, ne2 * ne3));
    return {tensor_bytes, tensor_bytes % units == 0 ? tensor_bytes / units : tensor_bytes,
            chunk_bytes};
  }

  uint64_t chunks_per_unit() const {
    return unit_bytes == 0 ? 0 : (unit_bytes + chunk_bytes - 1) / chunk_bytes;
  }
  uint64_t n_chunks() const {
    return unit_bytes == 0 ? 0 : tensor_bytes / unit_bytes * chunks_per_unit();
  }
  // The chunk holding byte `offset` (< tensor_bytes).
  uint64_t ChunkAt(uint64_t offset) const {
    return offset / unit_bytes * chunks_per_unit() + offset % unit_bytes / chunk_bytes;
  }
  uint64_t ChunkBegin(uint64_t c) const {
    return c / chunks_per_unit() * unit_bytes + c % chunks_per_unit() * chunk_bytes;
  }
  uint64_t ChunkEnd(uint64_t c) const {
    const uint64_t unit_end = (c / chunks_per_unit() + 1) * unit_bytes;
    return std::min(ChunkBegin(c) + chunk_bytes, unit_end);
  }
};

}  // namespace tritmoe
