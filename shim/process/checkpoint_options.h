// The options of a Checkpoint request, as `runc checkpoint` needs them.
#pragma once

#include "absl/status/statusor.h"
#include "shim.pb.h"
#include "shim/process/environment.h"

namespace shim::process {

// The request as `runc checkpoint` needs it. The options come as
// containerd.runc.v1.CheckpointOptions, or the older
// containerd.linux.runc.CheckpointOptions (image_path and work_path swap
// numbers there); an image path in them wins over the request's path. No
// options: runc-v2's defaults (leave running). Any other type, or no image
// path at all, is InvalidArgument.
absl::StatusOr<CheckpointSpec> CheckpointSpecOf(
    const containerd::task::v2::CheckpointTaskRequest& req);

}  // namespace shim::process
