// The container's rootfs mounts, as listed in CreateTaskRequest.rootfs
// (usually one overlay, or one bind for `ctr run --rootfs`), mounted onto
// <bundle>/rootfs and taken down again on delete.
//
// Options are read the way mount(8) and containerd do: flag words become
// mount flags, propagation words a second mount call, everything else the
// filesystem's data string.
//
// Left alone on purpose: an overlay whose option string exceeds a page (very
// many lowerdirs) fails with the kernel's error instead of being shortened
// by relative paths; "loop" and containerd's "X-containerd.*" options are
// passed to the kernel as data (and so fail) rather than interpreted.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace shim::oci {

// <bundle>/rootfs: where the container's rootfs is mounted (the root.path
// containerd writes into the bundle's config.json).
std::string RootfsOf(const std::string& bundle);

struct Mount {
  std::string type, source;
  std::vector<std::string> options;
};

// Mounts each of `mounts` onto `target`, in order. On failure it unmounts
// what this call mounted and returns the error naming the failing mount.
absl::Status MountRootfs(const std::vector<Mount>& mounts, const std::string& target);

// Unmounts everything stacked on `target` until it is no longer a mount
// point; a busy mount is detached (MNT_DETACH) as a last resort. OK when
// nothing is mounted there, or `target` does not exist.
absl::Status UnmountRootfs(const std::string& target);

// --- exposed for tests ---

struct MountOptions {
  unsigned long flags = 0;        // MS_* for the main mount call
  unsigned long propagation = 0;  // MS_PRIVATE/SHARED/SLAVE/UNBINDABLE [| MS_REC], 0 = none
  std::string data;               // the remaining options joined with ','
};
MountOptions ParseMountOptions(const std::vector<std::string>& options);

}  // namespace shim::oci
