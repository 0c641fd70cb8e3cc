// Turns errno into an absl::Status whose code matches the failure, with the
// operation named in the message ("open /x: No such file or directory").
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace base {

inline absl::Status ErrnoStatus(std::string_view what, int err = errno) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return absl::Status(absl::ErrnoToStatusCode(err), msg);
}

}  // namespace base
