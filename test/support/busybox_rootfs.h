// A minimal container root filesystem made of busybox-static: bin/busybox
// plus one symlink per applet (`busybox --list`), and the directories a
// runtime expects (proc, dev, sys, tmp, etc, root) with a root-only
// etc/passwd and etc/group. Run commands with PATH=/bin.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace test_support {

// Populates `dir` (created if missing). `busybox` must be a static binary.
absl::Status BusyboxRootfs(const std::string& dir, const std::string& busybox = "/bin/busybox");

}  // namespace test_support
