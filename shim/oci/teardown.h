// A container's teardown, in the order runc-v2 keeps: `runc delete`, then
// whatever must outlive the container until then (its binary:// logger),
// then the rootfs unmounted.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "shim/oci/runc.h"

namespace shim::oci {

struct TeardownOptions {
  bool force = true;  // `runc delete --force`: a running container is killed
  // Runs after the delete with its result (OK also when the container was
  // gone already), before the unmount. The shim stops the container's logger
  // here: it reads the container's output until the container is gone.
  std::function<void(const absl::Status& deleted)> after_delete;
  // false: the rootfs stays mounted (for another create in the same bundle,
  // or because nothing of ours is mounted there).
  bool unmount = true;
};

// `runc delete [--force] <id>`, options.after_delete, then everything
// unmounted from RootfsOf(bundle) (mount.h). NotFound from the delete (the
// container is gone already) counts as deleted. Returns the delete's error,
// else the unmount's.
absl::Status TearDown(const Runc& runc, const std::string& id, const std::string& bundle,
                      const TeardownOptions& options = {});

}  // namespace shim::oci
