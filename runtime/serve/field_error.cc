#include "runtime/serve/field_error.h"

#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace tritmoe {
namespace {

constexpr absl::string_view kFieldPayload = "tritmoe.dev/field";
constexpr absl::string_view kCodePayload = "tritmoe.dev/error_code";

std::string Payload(const absl::Status& status, absl::string_view key) {
  auto value = status.GetPayload(key);
  return value ? std::string(*value) : std::string();
}

}  // namespace

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return FieldError(absl::StatusCode::kInvalidArgument, field, message);
}

absl::Status FieldError(absl::StatusCode code, absl::string_view field, absl::string_view message,
                        absl::string_view error_code) {
  absl::Status status(code, absl::StrCat(field, ": ", message));
  status.SetPayload(kFieldPayload, absl::Cord(field));
  if (!error_code.empty()) status.SetPayload(kCodePayload, absl::Cord(error_code));
  return status;
}

std::string ErrorField(const absl::Status& status) { return Payload(status, kFieldPayload); }
std::string ErrorCode(const absl::Status& status) { return Payload(status, kCodePayload); }

}  // namespace tritmoe
