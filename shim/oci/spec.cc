#include "shim/oci/spec.h"

#include <functional>

#include "base/read_file.h"
#include "shim/oci/json_scan.h"

namespace shim::oci {

namespace {

// Walks the members of the object that is next: `member(key)` consumes the
// member's value and says whether that worked, or returns nullopt to have it
// skipped.
bool ForEachMember(JsonScanner& scan,
                   const std::function<std::optional<bool>(const std::string&)>& member) {
  if (!scan.Consume('{')) return false;
  if (scan.Consume('}')) return true;
  do {
    std::string key;
    if (!scan.ReadString(&key) || !scan.Consume(':')) return false;
    std::optional<bool> read = member(key);
    if (read.has_value() ? !*read : !scan.SkipValue()) return false;
  } while (scan.Consume(','));
  return scan.Consume('}');
}

}  // namespace

absl::StatusOr<bool> HasPrivatePidNamespace(std::string_view config_json) {
  JsonScanner scan(config_json);
  bool private_pid = false;
  auto namespace_entry = [&scan, &private_pid] {
    std::string type, path;
    bool ok = ForEachMember(scan, [&](const std::string& key) -> std::optional<bool> {
      if (key == "type") return scan.ReadString(&type);
      if (key == "path") return scan.ReadString(&path);
      return std::nullopt;
    });
    if (ok && type == "pid" && path.empty()) private_pid = true;
    return ok;
  };
  auto linux_member = [&](const std::string& key) -> std::optional<bool> {
    if (key != "namespaces") return std::nullopt;
    if (scan.ConsumeWord("null")) return true;
    if (!scan.Consume('[')) return false;
    if (scan.Consume(']')) return true;
    do {
      if (!namespace_entry()) return false;
    } while (scan.Consume(','));
    return scan.Consume(']');
  };
  bool ok = ForEachMember(scan, [&](const std::string& key) -> std::optional<bool> {
    if (key != "linux") return std::nullopt;
    if (scan.ConsumeWord("null")) return true;
    return ForEachMember(scan, linux_member);
  });
  if (!ok || !scan.AtEnd()) return absl::InvalidArgumentError("not an OCI spec (JSON object)");
  return private_pid;
}

bool ShouldKillAllOnExit(const std::string& bundle) {
  auto text = base::ReadFile(bundle + "/config.json");
  if (!text.ok()) return true;
  auto private_pid = HasPrivatePidNamespace(*text);
  return !private_pid.ok() || !*private_pid;
}

}  // namespace shim::oci
