#include "shim/oci/spec.h"

#include "base/read_file.h"
#include "nlohmann/json.hpp"

namespace shim::oci {

absl::StatusOr<bool> HasPrivatePidNamespace(std::string_view config_json) {
  const nlohmann::json spec =
      nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object()) return absl::InvalidArgumentError("not an OCI spec (JSON object)");
  auto linux_it = spec.find("linux");
  if (linux_it == spec.end() || linux_it->is_null()) return false;
  if (!linux_it->is_object()) return absl::InvalidArgumentError("OCI spec: linux is not an object");
  auto namespaces = linux_it->find("namespaces");
  if (namespaces == linux_it->end() || namespaces->is_null()) return false;
  if (!namespaces->is_array())
    return absl::InvalidArgumentError("OCI spec: linux.namespaces is not an array");
  for (const nlohmann::json& ns : *namespaces) {
    if (!ns.is_object()) return absl::InvalidArgumentError("OCI spec: a namespace is not an object");
    auto type = ns.find("type");
    auto path = ns.find("path");
    if ((type != ns.end() && !type->is_string()) ||
        (path != ns.end() && !path->is_null() && !path->is_string()))
      return absl::InvalidArgumentError("OCI spec: a namespace's type or path is not a string");
    // A pid namespace with a path joins another's (e.g. the host's).
    bool own_path = path == ns.end() || path->is_null() || path->get_ref<const std::string&>().empty();
    if (type != ns.end() && *type == "pid" && own_path) return true;
  }
  return false;
}

bool ShouldKillAllOnExit(const std::string& bundle) {
  auto text = base::ReadFile(bundle + "/config.json");
  if (!text.ok()) return true;
  auto private_pid = HasPrivatePidNamespace(*text);
  return !private_pid.ok() || !*private_pid;
}

std::optional<std::string> SpecCgroupsPath(std::string_view config_json) {
  const nlohmann::json spec =
      nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object()) return std::nullopt;
  auto linux_it = spec.find("linux");
  if (linux_it == spec.end() || !linux_it->is_object()) return std::nullopt;
  auto path = linux_it->find("cgroupsPath");
  if (path == linux_it->end() || !path->is_string() || path->get_ref<const std::string&>().empty())
    return std::nullopt;
  return path->get<std::string>();
}

}  // namespace shim::oci
