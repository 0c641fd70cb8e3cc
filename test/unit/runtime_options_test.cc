// Runtime options as containerd sends them: each type as the Any containerd
// builds from its own protos, the runtime config file (TOML) behind
// runtimeoptions.v1.Options, and what becomes of them on runc's command line.
#include <sys/stat.h>

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "google/protobuf/any.pb.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"
#include "runtimeoptions.pb.h"
#include "shim/manager/shim_cgroup.h"
#include "shim/process/runtime_options.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using embedshim::RuntimeOptions;
using shim::DecodeRuntimeOptions;
using shim::ParseRuntimeConfig;

// The Any as containerd's typeurl makes it.
google::protobuf::Any AnyOf(const google::protobuf::Message& m) {
  google::protobuf::Any any;
  any.set_type_url(m.GetTypeName());  // containerd sends the bare full name
  any.set_value(m.SerializeAsString());
  return any;
}

bool Contains(const absl::Status& st, std::string_view text) {
  return std::string(st.message()).find(text) != std::string::npos;
}

TEST_CASE("options: containerd.runc.v1.Options, every field", "[unit][options]") {
  containerd::runc::v1::Options o;
  o.set_no_pivot_root(true);
  o.set_no_new_keyring(true);
  o.set_shim_cgroup("/podruntime/shim");
  o.set_io_uid(1001);
  o.set_io_gid(1002);
  o.set_binary_name("crun");
  o.set_root("/run/my-root");
  o.set_criu_path("/usr/sbin/criu");
  o.set_systemd_cgroup(true);
  o.set_criu_image_path("/images");
  o.set_criu_work_path("/work");
  google::protobuf::Any any = AnyOf(o);
  CHECK(any.type_url() == "containerd.runc.v1.Options");
  auto r = DecodeRuntimeOptions(any);
  REQUIRE_OK(r);
  CHECK(r->no_pivot_root());
  CHECK(r->no_new_keyring());
  CHECK(r->shim_cgroup() == "/podruntime/shim");
  CHECK(r->io_uid() == 1001);
  CHECK(r->io_gid() == 1002);
  CHECK(r->binary_name() == "crun");
  CHECK(r->root() == "/run/my-root");
  CHECK(r->criu_path() == "/usr/sbin/criu");
  CHECK(r->systemd_cgroup());
  CHECK(r->criu_image_path() == "/images");
  CHECK(r->criu_work_path() == "/work");

  // With the type.googleapis.com/ prefix other clients use.
  any.set_type_url("type.googleapis.com/containerd.runc.v1.Options");
  r = DecodeRuntimeOptions(any);
  REQUIRE_OK(r);
  CHECK(r->binary_name() == "crun");
}

TEST_CASE("options: containerd.linux.runc.CreateOptions, as the Go client sends them",
          "[unit][options]") {
  containerd::linux::runc::CreateOptions o;
  o.set_no_pivot_root(true);
  o.set_no_new_keyring(true);
  o.set_shim_cgroup("/shim");
  o.set_io_uid(2001);
  o.set_io_gid(2002);
  o.set_criu_work_path("/cw");
  o.set_criu_image_path("/ci");
  // The v1 runtime's restore flags: accepted, nothing to keep.
  o.set_open_tcp(true);
  o.set_external_unix_sockets(true);
  o.set_terminal(true);
  o.set_file_locks(true);
  o.add_empty_namespaces("network");
  o.set_cgroups_mode("soft");
  auto r = DecodeRuntimeOptions(AnyOf(o));
  REQUIRE_OK(r);
  CHECK(r->no_pivot_root());
  CHECK(r->no_new_keyring());
  CHECK(r->shim_cgroup() == "/shim");
  CHECK(r->io_uid() == 2001);
  CHECK(r->io_gid() == 2002);
  CHECK(r->criu_work_path() == "/cw");
  CHECK(r->criu_image_path() == "/ci");
  CHECK(r->binary_name().empty());  // defaults come later (WithDefaults)
  CHECK(r->root().empty());
}

TEST_CASE("options: containerd.linux.runc.RuncOptions", "[unit][options]") {
  containerd::linux::runc::RuncOptions o;
  o.set_runtime("crun");
  o.set_runtime_root("/run/crun-root");
  o.set_criu_path("/opt/criu");
  o.set_systemd_cgroup(true);
  auto r = DecodeRuntimeOptions(AnyOf(o));
  REQUIRE_OK(r);
  CHECK(r->binary_name() == "crun");
  CHECK(r->root() == "/run/crun-root");
  CHECK(r->criu_path() == "/opt/criu");
  CHECK(r->systemd_cgroup());
}

TEST_CASE("options: runtimeoptions.v1.Options reads its TOML file", "[unit][options]") {
  test_support::ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string path = dir.Sub("runtime.toml");
  REQUIRE_OK(test_support::WriteFile(path,
                                     "# what ctr --runtime-config-path and CRI point at\n"
                                     "BinaryName = \"crun\"   # a comment\n"
                                     "Root = '/run/literal-root'\n"
                                     "SystemdCgroup = true\n"
                                     "NoPivotRoot = true\n"
                                     "NoNewKeyring = true\n"
                                     "ShimCgroup = \"/podruntime/shim\"\n"
                                     "IoUid = 1000\n"
                                     "IoGid = 0x3e9\n"
                                     "CriuPath = \"/usr/sbin/criu\"\n"
                                     "CriuImagePath = \"\"\"/img\"\"\"\n"
                                     "CriuWorkPath = \"/work\"\n"
                                     "SomethingElse = [1, 2]\n"
                                     "\n"
                                     "[other_runtime]\n"
                                     "BinaryName = \"not-this\"\n"
                                     "Root = \"/not/this\"\n"
                                     "[[more]]\n"
                                     "SystemdCgroup = \"not a bool, and not ours\"\n"));
  runtimeoptions::v1::Options o;
  o.set_config_path(path);
  auto r = DecodeRuntimeOptions(AnyOf(o));
  REQUIRE_OK(r);
  CHECK(r->binary_name() == "crun");
  CHECK(r->root() == "/run/literal-root");
  CHECK(r->systemd_cgroup());
  CHECK(r->no_pivot_root());
  CHECK(r->no_new_keyring());
  CHECK(r->shim_cgroup() == "/podruntime/shim");
  CHECK(r->io_uid() == 1000);
  CHECK(r->io_gid() == 1001);
  CHECK(r->criu_path() == "/usr/sbin/criu");
  CHECK(r->criu_image_path() == "/img");
  CHECK(r->criu_work_path() == "/work");

  // No config_path: nothing set.
  r = DecodeRuntimeOptions(AnyOf(runtimeoptions::v1::Options()));
  REQUIRE_OK(r);
  CHECK(r->binary_name().empty());
}

TEST_CASE("options: a bad runtime config file is a clear error naming file and line",
          "[unit][options]") {
  test_support::ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string path = dir.Sub("bad.toml");
  REQUIRE_OK(test_support::WriteFile(path, "BinaryName = \"runc\"\n\nRoot = /unquoted\n"));
  runtimeoptions::v1::Options o;
  o.set_config_path(path);
  auto r = DecodeRuntimeOptions(AnyOf(o));
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  INFO(r.status().message());
  CHECK(Contains(r.status(), "runtime config " + path + ":3:"));

  // A known key of the wrong type, with its line.
  auto typed = ParseRuntimeConfig("BinaryName = \"runc\"\nSystemdCgroup = \"yes\"\n", "f.toml");
  REQUIRE(typed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(typed.status().message()) ==
        "runtime config f.toml:2: SystemdCgroup must be a boolean");
  typed = ParseRuntimeConfig("IoUid = -1\n", "f.toml");
  CHECK(std::string(typed.status().message()) ==
        "runtime config f.toml:1: IoUid must be an integer from 0 to 4294967295");
  typed = ParseRuntimeConfig("IoGid = 4294967296\n", "f.toml");
  CHECK(typed.status().code() == absl::StatusCode::kInvalidArgument);
  typed = ParseRuntimeConfig("Root = 7\n", "f.toml");
  CHECK(std::string(typed.status().message()) == "runtime config f.toml:1: Root must be a string");
  // A key twice is bad TOML.
  typed = ParseRuntimeConfig("Root = \"a\"\nRoot = \"b\"\n", "f.toml");
  CHECK(typed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Contains(typed.status(), "f.toml:2:"));

  // A file that is not there.
  o.set_config_path(dir.Sub("missing.toml"));
  r = DecodeRuntimeOptions(AnyOf(o));
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Contains(r.status(), dir.Sub("missing.toml")));
  CHECK(Contains(r.status(), "No such file"));

  // Characters Debian's toml++ 3.3 meets with undefined behaviour
  // (runtime_options_fuzz found it: test/fuzz/corpus/runtime_options_fuzz/
  // ub-toml-unreachable); ASCII and others still parse.
  typed = ParseRuntimeConfig("Root = \"/a\"\nBi\xcc\xaevpo = 1\n", "f.toml");
  CHECK(std::string(typed.status().message()) ==
        "runtime config f.toml:2: a control character, or one the TOML parser mishandles "
        "(U+00A1 to U+0499, U+2C5E to U+3057 but U+3000, or U+FB26 to U+FEFE)");
  // The third: a control character after '[' (toml++ asserts, aborting the server).
  typed = ParseRuntimeConfig("Root = \"/a\"\n[\x1f\x04]\n", "f.toml");
  CHECK(typed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Contains(typed.status(), "f.toml:2: a control character"));
  // The fourth and fifth: toml++'s own checks fail (a table header's '['
  // without a key after it; a '}' in an array). They abort no more: the file
  // is refused.
  for (std::string bad : {"[*]", "[ =]", "[[#]]", "[\r\n", "[", "  [[ {", "np=[[[[}7  74suq"}) {
    typed = ParseRuntimeConfig("Root = \"/a\"\n" + bad, "f.toml");
    INFO(bad);
    CHECK(typed.status().code() == absl::StatusCode::kInvalidArgument);
  }
  typed = ParseRuntimeConfig("[*]", "f.toml");
  CHECK(std::string(typed.status().message()) ==
        "runtime config f.toml: malformed TOML (the parser's own checks failed)");
  typed = ParseRuntimeConfig("Root = \"/a\"\n[ a.b ]\n[[\"c\"]]\nx = [\n  [1],\n]\n", "f.toml");
  CHECK(typed.ok());
  typed = ParseRuntimeConfig("Root = \"/a\"\r\n", "f.toml");
  CHECK(typed.ok());
  typed = ParseRuntimeConfig("Root = \"/a\"\r[a]", "f.toml");  // CR alone
  CHECK(Contains(typed.status(), "f.toml:1: a control character"));
  // The second crash input: U+FEF7 in a key.
  typed = ParseRuntimeConfig("ZBinar\xef\xbb\xb7me = \"O\"\n", "f.toml");
  CHECK(typed.status().code() == absl::StatusCode::kInvalidArgument);
  typed = ParseRuntimeConfig("# \xc3\xbc\nRoot = \"/a\"\n", "f.toml");
  CHECK(typed.status().code() == absl::StatusCode::kInvalidArgument);
  // U+00A0, U+3000, U+20AC, U+1F600
  const std::string fine = "/\xc2\xa0\xe3\x80\x80\xe2\x82\xac\xf0\x9f\x98\x80";
  typed = ParseRuntimeConfig("Root = \"" + fine + "\"\n", "f.toml");
  REQUIRE(typed.ok());
  CHECK(typed->root() == fine);
  // Every code point the parser mishandles is refused before it sees one.
  for (char32_t c = 0xA0; c <= 0xFEFF; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;  // no UTF-8 for surrogates
    std::string utf8 = c < 0x800 ? std::string{static_cast<char>(0xC0 | c >> 6),
                                               static_cast<char>(0x80 | (c & 0x3F))}
                                 : std::string{static_cast<char>(0xE0 | c >> 12),
                                               static_cast<char>(0x80 | (c >> 6 & 0x3F)),
                                               static_cast<char>(0x80 | (c & 0x3F))};
    // At a token boundary, where the parser asks whether it is whitespace.
    (void)ParseRuntimeConfig("Root = \"/a\"" + utf8 + "\n", "f.toml");
  }

  // A device would never end (/dev/zero), a fifo would block the read.
  o.set_config_path("/dev/zero");
  r = DecodeRuntimeOptions(AnyOf(o));
  CHECK(std::string(r.status().message()) == "runtime config /dev/zero: not a regular file");
  REQUIRE(mkfifo(dir.Sub("fifo.toml").c_str(), 0600) == 0);
  o.set_config_path(dir.Sub("fifo.toml"));
  r = DecodeRuntimeOptions(AnyOf(o));
  CHECK(Contains(r.status(), "not a regular file"));
}

TEST_CASE("options: an unknown type is refused, naming it", "[unit][options]") {
  google::protobuf::Any any;
  any.set_type_url("types.example.com/acme.runtime.v9.Options");
  any.set_value("\x08\x01");
  auto r = DecodeRuntimeOptions(any);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Contains(r.status(), "runtime options of type acme.runtime.v9.Options are not supported"));

  // A known type whose bytes do not decode.
  any.set_type_url("containerd.runc.v1.Options");
  any.set_value("\xff\xff\xff");
  r = DecodeRuntimeOptions(any);
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(Contains(r.status(), "containerd.runc.v1.Options: cannot decode"));

  // No options at all: the defaults.
  r = DecodeRuntimeOptions(google::protobuf::Any());
  REQUIRE_OK(r);
  RuntimeOptions d = shim::WithDefaults(*r);
  CHECK(d.binary_name() == "runc");
  CHECK(d.root() == "/run/containerd/runc");
}

TEST_CASE("options: what reaches runc's command line", "[unit][options]") {
  embedshim::ContainerRecord rec;
  rec.set_namespace_("ns1");
  rec.set_bundle("/b");
  containerd::runc::v1::Options o;
  o.set_binary_name("/opt/runc-wrapper");
  o.set_root("/run/r");
  o.set_systemd_cgroup(true);
  o.set_no_pivot_root(true);
  o.set_no_new_keyring(true);
  auto decoded = DecodeRuntimeOptions(AnyOf(o));
  REQUIRE_OK(decoded);
  *rec.mutable_options() = shim::WithDefaults(*decoded);

  shim::oci::RuncConfig config = shim::RuncConfigFor(rec);
  CHECK(config.binary == "/opt/runc-wrapper");
  CHECK(config.root == "/run/r/ns1");  // per namespace, as runc-v2
  CHECK(config.systemd_cgroup);
  CHECK(config.log_path == "/b/log.json");
  shim::oci::CreateOptions create;
  shim::ApplyCreateFlags(rec.options(), &create);
  CHECK(create.no_pivot);
  CHECK(create.no_new_keyring);

  shim::ApplyCreateFlags(RuntimeOptions(), &create);
  CHECK_FALSE(create.no_pivot);
  CHECK_FALSE(create.no_new_keyring);
}

TEST_CASE("options: the ShimCgroup of start's options", "[unit][options][cgroup]") {
  std::string why;
  containerd::runc::v1::Options o;
  o.set_shim_cgroup("/podruntime/embed");
  CHECK(shim::ShimCgroupOf(AnyOf(o), &why) == "/podruntime/embed");
  CHECK(why.empty());

  containerd::linux::runc::CreateOptions c;
  c.set_shim_cgroup("/from/create-options");
  CHECK(shim::ShimCgroupOf(AnyOf(c), &why) == "/from/create-options");

  // Options of a type this shim does not read: nothing, with the reason.
  google::protobuf::Any other;
  other.set_type_url("acme.Options");
  CHECK(shim::ShimCgroupOf(other, &why).empty());
  CHECK(why.find("acme.Options are not supported") != std::string::npos);
}

TEST_CASE("options: JoinCgroup on v1 hierarchies and on v2", "[unit][options][cgroup]") {
  test_support::ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  const std::string pid = std::to_string(getpid());
  // v1: each hierarchy that has the path; aliases (symlinks) skipped.
  const std::string v1 = dir.Sub("v1");
  for (const char* h : {"memory", "cpu,cpuacct", "pids"})
    REQUIRE_OK(test_support::MakeDirs(v1 + "/" + h + "/pod/shim"));
  REQUIRE_OK(test_support::MakeDirs(v1 + "/freezer"));  // has not the path
  REQUIRE(symlink("cpu,cpuacct", (v1 + "/cpu").c_str()) == 0);
  for (const char* h : {"memory", "cpu,cpuacct", "pids"})
    REQUIRE_OK(test_support::WriteFile(v1 + "/" + h + "/pod/shim/cgroup.procs", ""));
  REQUIRE_OK(shim::JoinCgroup("/pod/shim", v1));
  for (const char* h : {"memory", "cpu,cpuacct", "pids"}) {
    auto text = test_support::ReadFile(v1 + "/" + h + "/pod/shim/cgroup.procs");
    REQUIRE_OK(text);
    CHECK(*text == pid);
  }
  CHECK(shim::JoinCgroup("/no/such", v1).code() == absl::StatusCode::kNotFound);
  CHECK(shim::JoinCgroup("/pod/../..", v1).code() == absl::StatusCode::kInvalidArgument);

  // v2: the one tree.
  const std::string v2 = dir.Sub("v2");
  REQUIRE_OK(test_support::MakeDirs(v2 + "/pod/shim"));
  REQUIRE_OK(test_support::WriteFile(v2 + "/cgroup.controllers", "memory pids"));
  REQUIRE_OK(test_support::WriteFile(v2 + "/pod/shim/cgroup.procs", ""));
  REQUIRE_OK(shim::JoinCgroup("pod/shim", v2));
  auto text = test_support::ReadFile(v2 + "/pod/shim/cgroup.procs");
  REQUIRE_OK(text);
  CHECK(*text == pid);
  CHECK(shim::JoinCgroup("/other", v2).code() == absl::StatusCode::kNotFound);
}

}  // namespace
