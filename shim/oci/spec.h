// What the shim reads from a bundle's OCI spec (config.json) itself.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace shim::oci {

// Whether the spec gives the container a pid namespace of its own
// (linux.namespaces has {"type": "pid"} without a "path"). A container
// without one shares another namespace (the host's, with `ctr run --with-ns
// pid:/proc/1/ns/pid`), and the kernel does not kill the rest of its
// processes when its init dies. InvalidArgument if the text is not a spec.
absl::StatusOr<bool> HasPrivatePidNamespace(std::string_view config_json);

// runc-v2's shouldKillAllOnExit: whether every process left in the
// container's cgroup must be killed when its init exits, i.e. it has no pid
// namespace of its own. An unreadable or undecodable <bundle>/config.json
// says yes, as in runc-v2.
bool ShouldKillAllOnExit(const std::string& bundle);

// linux.cgroupsPath of a spec; nullopt when absent, empty or not a spec.
std::optional<std::string> SpecCgroupsPath(std::string_view config_json);

}  // namespace shim::oci
