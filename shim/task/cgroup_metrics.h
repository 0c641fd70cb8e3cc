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

// A memory cgroup's directory, and whether it is in a v1 hierarchy (else the
// unified one).
struct CgroupDir {
  std::string path;
  bool v1 = false;
};
// pid's memory cgroup: the v1 memory hierarchy's when the host has one (a
// hybrid host also has an empty unified one), else the unified one's.
absl::StatusOr<CgroupDir> MemoryCgroupOf(pid_t pid, const std::string& proc_root = "/proc",
                                         const std::string& cgroup_root = "/sys/fs/cgroup");
// The unified hierarchy: cgroup_root itself, or cgroup_root/unified on a
// hybrid host.
std::string UnifiedRoot(const std::string& cgroup_root);

}  // namespace shim
