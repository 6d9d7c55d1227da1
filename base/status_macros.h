// Status propagation helpers for library code (absl::Status / absl::StatusOr).
//
//   RETURN_IF_ERROR(expr);              // returns expr's status when not ok
//   ASSIGN_OR_RETURN(auto x, expr);     // unwraps a StatusOr or returns its status
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TRITMOE_CONCAT_INNER(a, b) a##b
#define TRITMOE_CONCAT(a, b) TRITMOE_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                              \
  do {                                                     \
    ::absl::Status tritmoe_status_ = (expr);               \
    if (!tritmoe_status_.ok()) return tritmoe_status_;     \
  } while (0)

#define TRITMOE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  TRITMOE_ASSIGN_OR_RETURN_IMPL(TRITMOE_CONCAT(tritmoe_statusor_, __LINE__), lhs, expr)
