#include "shim/process/checkpoint_options.h"

#include "fmt/format.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"

namespace shim::process {

absl::StatusOr<CheckpointSpec> CheckpointSpecOf(
    const containerd::task::v2::CheckpointTaskRequest& req) {
  CheckpointSpec spec;
  spec.image_path = req.path();
  const google::protobuf::Any& any = req.options();
  std::string type = any.type_url();
  if (size_t slash = type.rfind('/'); slash != std::string::npos) type = type.substr(slash + 1);
  auto fill = [&spec](const auto& o) {
    spec.exit = o.exit();
    spec.open_tcp = o.open_tcp();
    spec.external_unix_sockets = o.external_unix_sockets();
    spec.terminal = o.terminal();
    spec.file_locks = o.file_locks();
    spec.empty_namespaces.assign(o.empty_namespaces().begin(), o.empty_namespaces().end());
    spec.cgroups_mode = o.cgroups_mode();
    if (!o.image_path().empty()) spec.image_path = o.image_path();
    spec.work_path = o.work_path();
  };
  if (type.empty()) {
    // No options: runc-v2's defaults (leave running).
  } else if (type == "containerd.runc.v1.CheckpointOptions") {
    containerd::runc::v1::CheckpointOptions o;
    if (!o.ParseFromString(any.value()))
      return absl::InvalidArgumentError(fmt::format("cannot decode {}", type));
    fill(o);
  } else if (type == "containerd.linux.runc.CheckpointOptions") {
    containerd::linux::runc::CheckpointOptions o;
    if (!o.ParseFromString(any.value()))
      return absl::InvalidArgumentError(fmt::format("cannot decode {}", type));
    fill(o);
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "checkpoint options of type {} are not supported (want "
        "containerd.runc.v1.CheckpointOptions)", type));
  }
  if (spec.image_path.empty())
    return absl::InvalidArgumentError("checkpoint: no image path (request path or options)");
  return spec;
}

}  // namespace shim::process
