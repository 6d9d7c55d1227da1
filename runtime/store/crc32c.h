// CRC-32C (Castagnoli, the iSCSI/ext4/gRPC polynomial 0x1EDC6F41, reflected), the checksum of the
// model store's chunks. Uses the SSE4.2 crc32 instruction when the CPU has it (about 8 bytes per
// cycle-chain), a table otherwise; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tritmoe {

// CRC-32C of data[0, n), continuing from `crc` (0 to start): Crc32c(b, Crc32c(a)) == Crc32c(a+b).
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);

// The portable table version (tests hold the two against each other).
uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace tritmoe
