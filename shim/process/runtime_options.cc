#include "shim/process/runtime_options.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <limits>

// toml++ throws unless told otherwise; the project keeps exceptions out of
// its layers, so it returns a parse_result instead. Only the parser is
// needed: no formatters (smaller code).
#define TOML_EXCEPTIONS 0
#define TOML_ENABLE_FORMATTERS 0
// toml++ 3.3.0 (Debian 12) asserts on some malformed files ("[*]",
// "a=[[}"): assert() aborts the server (and the replayed Create would abort
// the next), and with NDEBUG its checks become __builtin_assume, undefined
// behaviour. runtime_options_fuzz found them. A failed check here only marks
// the parse as failed; the parser goes on to its own error or result, and
// ParseRuntimeConfig refuses the file. NDEBUG is lifted for the include so
// that no check turns into an assumption.
namespace shim {
thread_local bool toml_check_failed = false;
}
#pragma push_macro("NDEBUG")
#undef NDEBUG
#define TOML_ASSERT(expr) ((expr) ? void(0) : void(::shim::toml_check_failed = true))
#include <toml++/toml.h>
#pragma pop_macro("NDEBUG")

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

// toml++ 3.3.0 (Debian 12) reaches __builtin_unreachable() when it asks
// whether some non-ASCII code points are whitespace, which it does at token
// boundaries: undefined behaviour, found by runtime_options_fuzz. Its
// is_non_ascii_horizontal_whitespace splits U+00A0..U+FEFF into blocks of
// 0x3FA and has no case for blocks 0, 11 and 63 but for U+00A0, U+3000 and
// U+FEFF.
bool TomlMishandles(char32_t c) {
  if (c < 0xA0 || c > 0xFEFF || c == 0xA0 || c == 0x3000 || c == 0xFEFF) return false;
  const uint32_t block = (c - 0xA0) / 0x3FA;
  return block == 0 || block == 11 || block == 63;
}

// The 1-based line of the first such code point in the UTF-8 `text`, or of
// the first control character but tab, CR and LF, or 0. TOML allows no raw
// control character anywhere, and toml++ 3.3.0 asserts (aborts) on one
// after '[' (parse_key), also found by runtime_options_fuzz. Malformed
// UTF-8 is left to the parser, which refuses it.
size_t LineOfUnsafeCodePoint(std::string_view text) {
  size_t line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b == '\n') ++line;
    if ((b < 0x20 && b != '\t' && b != '\n' && b != '\r') || b == 0x7F) return line;
    if (b == '\r' && (i + 1 == text.size() || text[i + 1] != '\n')) return line;  // CR only in CRLF
    const size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (len == 1 || i + len > text.size()) continue;
    char32_t c = b & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) c = c << 6 | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    if (TomlMishandles(c)) return line;
    i += len - 1;
  }
  return 0;
}

}  // namespace

absl::StatusOr<RuntimeOptions> ParseRuntimeConfig(std::string_view text,
                                                  const std::string& source) {
  if (size_t line = LineOfUnsafeCodePoint(text); line != 0)
    return absl::InvalidArgumentError(fmt::format(
        "runtime config {}:{}: a control character, or one the TOML parser mishandles "
        "(U+00A1 to U+0499, U+2C5E to U+3057 but U+3000, or U+FB26 to U+FEFE)",
        source, line));
  toml_check_failed = false;
  toml::parse_result parsed = toml::parse(text, source);
  if (toml_check_failed)
    return absl::InvalidArgumentError(
        fmt::format("runtime config {}: malformed TOML (the parser's own checks failed)", source));
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
