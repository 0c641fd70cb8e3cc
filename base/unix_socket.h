// Filesystem unix sockets, as containerd's shims use them (never abstract).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace base {

// Listens at `path` with mode 0600 (non-blocking, close-on-exec).
absl::StatusOr<base::UniqueFd> ListenUnix(const std::string& path);
// "unix:///run/x.sock" -> "/run/x.sock"; a bare path is returned as is.
std::string_view SocketPath(std::string_view address);
// A connected unix stream socket (blocking, close-on-exec).
absl::StatusOr<base::UniqueFd> DialUnix(std::string_view address);

}  // namespace base
