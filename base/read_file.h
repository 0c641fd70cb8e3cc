// ReadFile: a whole file into a string, or the errno of what failed
// ("open /x: No such file or directory").
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/status/statusor.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"

namespace base {

inline absl::StatusOr<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path);
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read " + path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace base
