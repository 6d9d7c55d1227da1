// Reader of the golden test-vector files in tests/data/testvectors (format: README.txt there).
//
// A file is a sequence of '#' header lines and data lines. Every header line may carry
// "key=value" parameters (type=q4_K, n_per_row=512, imatrix=yes, ...), collected into params.
// A header line "# <name>: ..." or "# <name> (...)" opens a data section:
//   input, imatrix, dequantized  -> float32 bit patterns, 8-hex-digit words separated by spaces;
//   quantized, blocks            -> bytes as hex, one block per line (rows of hex digit pairs).
// When the header states a count ("2048 float32 values", "1152 bytes") it is checked.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tritmoe::testing {

struct TestVector {
  std::string path;
  std::map<std::string, std::string> params;            // key=value from the header lines
  std::map<std::string, std::vector<uint32_t>> floats;  // section -> float32 bit patterns
  std::map<std::string, std::vector<uint8_t>> bytes;    // section -> raw bytes
  std::map<std::string, std::vector<std::vector<uint8_t>>> byte_lines;  // section -> per line

  bool HasFloats(const std::string& section) const { return floats.count(section) != 0; }
  bool HasBytes(const std::string& section) const { return bytes.count(section) != 0; }
  // The section's float values (bit patterns preserved; empty when absent).
  std::vector<float> Floats(const std::string& section) const;
  // The section's bytes (empty when absent).
  const std::vector<uint8_t>& Bytes(const std::string& section) const;
  // A parameter as an integer, or `fallback` when missing or not a number.
  int64_t IntParam(const std::string& key, int64_t fallback = -1) const;
  std::string Param(const std::string& key) const;
};

// Parses one file. Errors: unreadable file, malformed hex, a count that does not match.
absl::StatusOr<TestVector> ReadTestVector(const std::string& path);

// Absolute path of a file in tests/data/testvectors (needs TRITMOE_TEST_DATA at compile time of
// the caller, so it is a header-only helper).
inline std::string TestVectorDir() {
#ifdef TRITMOE_TEST_DATA
  return std::string(TRITMOE_TEST_DATA) + "/testvectors";
#else
  return "tests/data/testvectors";
#endif
}

// Names (not paths) of the files in `dir` that start with `prefix`, sorted.
std::vector<std::string> ListTestVectors(const std::string& dir, const std::string& prefix);

}  // namespace tritmoe::testing
