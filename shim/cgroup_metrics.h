// CgroupMetrics: what the Stats RPC answers. The cgroup of a container's
// init process, read from cgroupfs, as containerd's own metrics messages:
// io.containerd.cgroups.v1.Metrics when the process is in a v1 memory
// hierarchy, io.containerd.cgroups.v2.Metrics on the unified hierarchy.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace shim {

struct CgroupMetrics {
  std::string type_url;  // the message name, as containerd resolves it
  std::string value;     // the serialised message
};

// `proc_root` and `cgroup_root` are /proc and /sys/fs/cgroup but for tests.
absl::StatusOr<CgroupMetrics> ReadCgroupMetrics(pid_t pid, const std::string& proc_root = "/proc",
                                                const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace shim
