#include "shim/runtime_options.h"

#include <sys/stat.h>

#include <cstdint>
#include <limits>

// toml++ throws unless told otherwise; the project keeps exceptions out of
// its layers, so it returns a parse_result instead. Only the parser is
// needed: no formatters (smaller code).
#define TOML_EXCEPTIONS 0
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

#include "base/absl_fmt.h"
#include "base/read_file.h"
#include "fmt/format.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"
#include "runtimeoptions.pb.h"

namespace shim {
namespace {

using embedshim::RuntimeOptions;

// A runtime config is a few lines; anything this big is not one.
constexpr off_t kMaxConfigFileBytes = 1 << 20;

// The keys of a runtime config file, containerd.runc.v1.Options' Go names.
enum class Kind { kBool, kString, kUint32 };
struct ConfigKey {
  std::string_view name;
  Kind kind;
  void (*set_bool)(RuntimeOptions&, bool) = nullptr;
  void (*set_string)(RuntimeOptions&, std::string) = nullptr;
  void (*set_uint32)(RuntimeOptions&, uint32_t) = nullptr;
};

const ConfigKey kConfigKeys[] = {
    {"NoPivotRoot", Kind::kBool, [](RuntimeOptions& o, bool v) { o.set_no_pivot_root(v); }},
    {"NoNewKeyring", Kind::kBool, [](RuntimeOptions& o, bool v) { o.set_no_new_keyring(v); }},
    {"SystemdCgroup", Kind::kBool, [](RuntimeOptions& o, bool v) { o.set_systemd_cgroup(v); }},
    {"BinaryName", Kind::kString, nullptr,
     [](RuntimeOptions& o, std::string v) { o.set_binary_name(std::move(v)); }},
    {"Root", Kind::kString, nullptr,
     [](RuntimeOptions& o, std::string v) { o.set_root(std::move(v)); }},
    {"ShimCgroup", Kind::kString, nullptr,
     [](RuntimeOptions& o, std::string v) { o.set_shim_cgroup(std::move(v)); }},
    {"CriuPath", Kind::kString, nullptr,
     [](RuntimeOptions& o, std::string v) { o.set_criu_path(std::move(v)); }},
    {"CriuImagePath", Kind::kString, nullptr,
     [](RuntimeOptions& o, std::string v) { o.set_criu_image_path(std::move(v)); }},
    {"CriuWorkPath", Kind::kString, nullptr,
     [](RuntimeOptions& o, std::string v) { o.set_criu_work_path(std::move(v)); }},
    {"IoUid", Kind::kUint32, nullptr, nullptr,
     [](RuntimeOptions& o, uint32_t v) { o.set_io_uid(v); }},
    {"IoGid", Kind::kUint32, nullptr, nullptr,
     [](RuntimeOptions& o, uint32_t v) { o.set_io_gid(v); }},
};

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kBool: return "a boolean";
    case Kind::kString: return "a string";
    case Kind::kUint32: return "an integer from 0 to 4294967295";
  }
  return "";
}

absl::StatusOr<RuntimeOptions> ReadConfigFile(const std::string& path) {
  struct stat st;
  // A fifo would block the read, a device (/dev/zero) never end it.
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(
        fmt::format("runtime config {}: not a regular file", path));
  if (stat(path.c_str(), &st) == 0 && st.st_size > kMaxConfigFileBytes)
    return absl::InvalidArgumentError(
        fmt::format("runtime config {}: {} bytes is too big for a config file", path, st.st_size));
  auto text = base::ReadFile(path);
  if (!text.ok())
    return absl::InvalidArgumentError(
        fmt::format("runtime config {}: {}", path, text.status().message()));
  return ParseRuntimeConfig(*text, path);
}

}  // namespace

absl::StatusOr<RuntimeOptions> ParseRuntimeConfig(std::string_view text,
                                                  const std::string& source) {
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const toml::parse_error& e = parsed.error();
    return absl::InvalidArgumentError(fmt::format("runtime config {}:{}:{}: {}", source,
                                                  e.source().begin.line,
                                                  e.source().begin.column, e.description()));
  }
  RuntimeOptions out;
  for (const ConfigKey& key : kConfigKeys) {
    const toml::node* node = parsed.table().get(key.name);
    if (node == nullptr) continue;
    auto wrong_type = [&] {
      return absl::InvalidArgumentError(fmt::format("runtime config {}:{}: {} must be {}", source,
                                                    node->source().begin.line, key.name,
                                                    KindName(key.kind)));
    };
    switch (key.kind) {
      case Kind::kBool:
        if (!node->is_boolean()) return wrong_type();
        key.set_bool(out, node->as_boolean()->get());
        break;
      case Kind::kString:
        if (!node->is_string()) return wrong_type();
        key.set_string(out, node->as_string()->get());
        break;
      case Kind::kUint32: {
        if (!node->is_integer()) return wrong_type();
        int64_t v = node->as_integer()->get();
        if (v < 0 || v > std::numeric_limits<uint32_t>::max()) return wrong_type();
        key.set_uint32(out, static_cast<uint32_t>(v));
        break;
      }
    }
  }
  return out;
}

absl::StatusOr<RuntimeOptions> DecodeRuntimeOptions(const google::protobuf::Any& any) {
  RuntimeOptions out;
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
    out.set_shim_cgroup(o.shim_cgroup());
    out.set_criu_path(o.criu_path());
    out.set_criu_image_path(o.criu_image_path());
    out.set_criu_work_path(o.criu_work_path());
  } else if (type == "containerd.linux.runc.RuncOptions") {
    containerd::linux::runc::RuncOptions o;
    if (!o.ParseFromString(any.value())) return bad();
    out.set_binary_name(o.runtime());
    out.set_root(o.runtime_root());
    out.set_criu_path(o.criu_path());
    out.set_systemd_cgroup(o.systemd_cgroup());
  } else if (type == "containerd.linux.runc.CreateOptions") {
    // open_tcp, external_unix_sockets, terminal, file_locks,
    // empty_namespaces and cgroups_mode were the v1 runtime's CRIU restore
    // flags; runc-v2 has no use for them either (docs/OPTIONS.md).
    containerd::linux::runc::CreateOptions o;
    if (!o.ParseFromString(any.value())) return bad();
    out.set_no_pivot_root(o.no_pivot_root());
    out.set_no_new_keyring(o.no_new_keyring());
    out.set_shim_cgroup(o.shim_cgroup());
    out.set_io_uid(o.io_uid());
    out.set_io_gid(o.io_gid());
    out.set_criu_work_path(o.criu_work_path());
    out.set_criu_image_path(o.criu_image_path());
  } else if (type == "runtimeoptions.v1.Options") {
    // type_url names the file's format for runtimes that take several;
    // this one reads only its own TOML.
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

RuntimeOptions WithDefaults(RuntimeOptions options) {
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

void ApplyCreateFlags(const RuntimeOptions& options, oci::CreateOptions* create) {
  create->no_pivot = options.no_pivot_root();
  create->no_new_keyring = options.no_new_keyring();
}

}  // namespace shim
