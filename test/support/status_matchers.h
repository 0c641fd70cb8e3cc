// Catch2 assertions for absl::Status / absl::StatusOr that print the status
// on failure (a plain REQUIRE(s.ok()) only says "false"):
//
//   REQUIRE_OK(cd->Shutdown());
//   CHECK_OK(test_support::Run({"true"}));
//
// Header-only; include it from test executables (they have catch2).
#pragma once

#include <catch2/catch.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace test_support {

inline const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

}  // namespace test_support

#define TEST_SUPPORT_STATUS_ASSERT_(macro, expr)                      \
  do {                                                                \
    const auto& status_assert_value_ = (expr);                        \
    const absl::Status& status_assert_status_ =                       \
        ::test_support::StatusOf(status_assert_value_);               \
    INFO(#expr " -> " << status_assert_status_.ToString());           \
    macro(status_assert_status_.ok());                                \
  } while (false)

#define REQUIRE_OK(expr) TEST_SUPPORT_STATUS_ASSERT_(REQUIRE, expr)
#define CHECK_OK(expr) TEST_SUPPORT_STATUS_ASSERT_(CHECK, expr)
