#include "shim/oci/teardown.h"

#include "shim/oci/mount.h"

namespace shim::oci {

absl::Status TearDown(const Runc& runc, const std::string& id, const std::string& bundle,
                      const TeardownOptions& options) {
  absl::Status deleted = runc.Delete(id, options.force);
  if (absl::IsNotFound(deleted)) deleted = absl::OkStatus();  // already gone
  if (options.after_delete) options.after_delete(deleted);
  absl::Status unmounted = options.unmount ? UnmountRootfs(RootfsOf(bundle)) : absl::OkStatus();
  return deleted.ok() ? unmounted : deleted;
}

}  // namespace shim::oci
