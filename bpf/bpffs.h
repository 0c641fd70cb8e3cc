// bpffs plumbing: make sure it is mounted, create and remove pin directories.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace bpf {

inline constexpr std::string_view kBpffsRoot = "/sys/fs/bpf";

// Whether `path` lies on a bpffs.
bool IsBpffs(const std::string& path);

// Mounts bpffs on /sys/fs/bpf unless one is there already (a fresh host
// boots without it), as bpftool and cilium do.
absl::Status EnsureBpffsMounted();

// mkdir -p.
absl::Status MakeDirs(std::string_view path, mode_t mode);

// Unlinks every pin below `path` and removes the directories, `path`
// included. A missing `path` is success.
absl::Status RemoveTree(const std::string& path);

}  // namespace bpf
