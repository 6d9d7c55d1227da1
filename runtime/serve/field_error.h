// Errors about one field of a request. The status is InvalidArgument (or another code the caller
// picks) with the message "<field>: <what is wrong>", and carries the field's name as a payload
// so that the OpenAI front-end can fill the error's `param` without parsing the message.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace tritmoe {

// InvalidArgument "<field>: <message>" naming `field`.
absl::Status FieldError(absl::string_view field, absl::string_view message);
// The same with another code (e.g. NotFound for an unknown model) and, optionally, an
// OpenAI-style error code ("model_not_found", "context_length_exceeded").
absl::Status FieldError(absl::StatusCode code, absl::string_view field, absl::string_view message,
                        absl::string_view error_code = {});

// The field a status names, or "" when it names none.
std::string ErrorField(const absl::Status& status);
// The error code a status carries, or "".
std::string ErrorCode(const absl::Status& status);

}  // namespace tritmoe
