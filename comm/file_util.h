// Whole-file read/write for the small text files of this folder (placements, routing stats),
// with errors that name the path.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tritmoe::comm_internal {

absl::StatusOr<std::string> ReadTextFile(const std::string& path);
// Writes to path + ".tmp" and renames, so a reader never sees half a file.
absl::Status WriteTextFile(const std::string& path, const std::string& text);

}  // namespace tritmoe::comm_internal
