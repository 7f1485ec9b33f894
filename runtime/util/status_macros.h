// Early-return helpers for absl::Status / absl::StatusOr (Abseil 20220623 ships none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SEQBOAT_CONCAT_INNER(a, b) a##b
#define SEQBOAT_CONCAT(a, b) SEQBOAT_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status seqboat_status_ = (expr);           \
    if (!seqboat_status_.ok()) return seqboat_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares x from the StatusOr's value or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(SEQBOAT_CONCAT(seqboat_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
