// InstanceLock: the flock that serialises `start`s with each other and with
// a daemon that is removing its instance. The daemon unlinks the lock file
// when it leaves, so a waiter re-checks that it locked the file that is still
// there.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "shim/store/paths.h"

namespace shim {

class InstanceLock {
 public:
  // Blocks until held. An invalid lock (fd < 0) means the file could not be
  // opened; callers go on without it rather than fail a container start.
  static InstanceLock Acquire(const std::string& path);
  bool held() const { return fd_.valid(); }

 private:
  base::UniqueFd fd_;  // closing it releases the lock
};

// Creates /run/containerd-embed (0711) and the instance directory (0700).
absl::Status MakeInstanceDir(const InstancePaths& paths);

}  // namespace shim
