// Turns errno into an absl::Status whose code matches the failure, with the
// operation named in the message ("open /x: No such file or directory").
#pragma once

#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace base {

inline absl::Status ErrnoStatus(std::string_view what, int err = errno) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, ": ", std::strerror(err)));
}

}  // namespace base
