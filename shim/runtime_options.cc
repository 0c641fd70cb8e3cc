#include "shim/runtime_options.h"

#include <fstream>
#include <sstream>

#include "fmt/format.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"
#include "runtimeoptions.pb.h"

namespace shim {
namespace {

std::string Trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r");
  size_t e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// The few `Key = value` lines of a runtime config file that we honour.
// Tables and other keys are skipped: the file may also configure others.
absl::StatusOr<embedshim::RuntimeOptions> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(fmt::format("runtime config {:?}: cannot open", path));
  embedshim::RuntimeOptions out;
  std::string line;
  while (std::getline(in, line)) {
    line = Trim(line.substr(0, line.find('#')));
    size_t eq = line.find('=');
    if (line.empty() || line[0] == '[' || eq == std::string::npos) continue;
    std::string key = Trim(line.substr(0, eq));
    std::string value = Trim(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\''))
      value = value.substr(1, value.size() - 2);
    bool truth = value == "true";
    if (key == "BinaryName") out.set_binary_name(value);
    else if (key == "Root") out.set_root(value);
    else if (key == "SystemdCgroup") out.set_systemd_cgroup(truth);
    else if (key == "NoPivotRoot") out.set_no_pivot_root(truth);
    else if (key == "NoNewKeyring") out.set_no_new_keyring(truth);
  }
  return out;
}

}  // namespace

absl::StatusOr<embedshim::RuntimeOptions> DecodeRuntimeOptions(
    const google::protobuf::Any& any) {
  embedshim::RuntimeOptions out;
  if (any.type_url().empty()) return out;
  std::string type = any.type_url();
  if (size_t slash = type.rfind('/'); slash != std::string::npos) type = type.substr(slash + 1);

  auto bad = [&] {
    return absl::InvalidArgumentError(fmt::format("runtime options of type {}: cannot decode", type));
  };
  if (type == "containerd.runc.v1.Options") {
    containerd::runc::v1::Options o;
    if (!o.ParseFromString(any.value())) return bad();
    out.set_binary_name(o.binary_name());
    out.set_root(o.root());
    out.set_systemd_cgroup(o.systemd_cgroup());
    out.set_no_pivot_root(o.no_pivot_root());
    out.set_no_new_keyring(o.no_new_keyring());
    out.set_io_uid(o.io_uid());
    out.set_io_gid(o.io_gid());
  } else if (type == "containerd.linux.runc.RuncOptions") {
    containerd::linux::runc::RuncOptions o;
    if (!o.ParseFromString(any.value())) return bad();
    out.set_binary_name(o.runtime());
    out.set_root(o.runtime_root());
    out.set_systemd_cgroup(o.systemd_cgroup());
  } else if (type == "containerd.linux.runc.CreateOptions") {
    containerd::linux::runc::CreateOptions o;
    if (!o.ParseFromString(any.value())) return bad();
    out.set_no_pivot_root(o.no_pivot_root());
    out.set_no_new_keyring(o.no_new_keyring());
    out.set_io_uid(o.io_uid());  // ctr run --uidmap sends these
    out.set_io_gid(o.io_gid());
  } else if (type == "runtimeoptions.v1.Options") {
    runtimeoptions::v1::Options o;
    if (!o.ParseFromString(any.value())) return bad();
    if (!o.config_path().empty()) return ReadConfigFile(o.config_path());
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "runtime options of type {} are not supported (want containerd.runc.v1.Options, "
        "containerd.linux.runc.RuncOptions, containerd.linux.runc.CreateOptions or "
        "runtimeoptions.v1.Options)", type));
  }
  return out;
}

embedshim::RuntimeOptions WithDefaults(embedshim::RuntimeOptions options) {
  if (options.binary_name().empty()) options.set_binary_name("runc");
  if (options.root().empty()) options.set_root("/run/containerd/runc");
  return options;
}

oci::RuncConfig RuncConfigFor(const embedshim::ContainerRecord& r) {
  oci::RuncConfig config;
  config.binary = r.options().binary_name();
  config.root = r.options().root() + "/" + r.namespace_();
  config.systemd_cgroup = r.options().systemd_cgroup();
  config.log_path = r.bundle() + "/log.json";
  return config;
}

}  // namespace shim
