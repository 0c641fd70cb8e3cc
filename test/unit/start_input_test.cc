// What `start` reads on stdin (2.3's BootstrapParams or the options Any),
// what it answers each containerd, and the -info flag.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/strings/escaping.h"
#include "runc_options.pb.h"
#include "runtimeoptions.pb.h"
#include "shim/manager/flags.h"
#include "shim/manager/start_input.h"
#include "shim/manager/task_api_version.h"

namespace {

using containerd::runtime::bootstrap::v1::BootstrapParams;

// What containerd 2.3.4 wrote on stdin for `ctr run --runtime-config-path
// /tmp/spy/rt.toml --runtime io.containerd.spy.v1 ... spy1` (task spy1 in
// namespace default), captured by a shim that recorded its stdin.
constexpr char kContainerd234Stdin[] =
    "0a0473707931120764656661756c7418fcffffffffffffffff01220676322e332e342a212f746d702f7370"
    "792f637472642d76322e332e342f632e736f636b2e7474727063321b2f746d702f7370792f637472642d76"
    "322e332e342f632e736f636b3a2c2f746d702f7670656572732f636f6e7461696e6572642d76322e332e34"
    "2f62696e2f636f6e7461696e65726442310a2f0a1972756e74696d656f7074696f6e732e76312e4f707469"
    "6f6e73121212102f746d702f7370792f72742e746f6d6c4a112f72756e2f636f6e7461696e6572642f73";

shim::Flags StartFlags(std::string id, std::string ns) {
  shim::Flags f;
  f.id = std::move(id);
  f.namespace_ = std::move(ns);
  f.action = "start";
  return f;
}

std::string RuncOptionsAny(const std::string& binary) {
  containerd::runc::v1::Options o;
  o.set_binary_name(binary);
  google::protobuf::Any any;
  any.PackFrom(o);  // type URL type.googleapis.com/containerd.runc.v1.Options
  return any.SerializeAsString();
}

}  // namespace

TEST_CASE("start stdin: containerd 2.3.4's BootstrapParams is read as one, options from its extensions",
          "[start_input]") {
  const std::string bytes = absl::HexStringToBytes(kContainerd234Stdin);
  absl::StatusOr<shim::StartInput> in = shim::ParseStartInput(bytes, StartFlags("spy1", "default"));
  REQUIRE(in.ok());
  REQUIRE(in->bootstrap.has_value());
  CHECK(in->bootstrap->containerd_version() == "v2.3.4");
  CHECK(in->bootstrap->log_level() == -4);  // debug
  CHECK(in->bootstrap->containerd_ttrpc_address() == "/tmp/spy/ctrd-v2.3.4/c.sock.ttrpc");
  CHECK(in->bootstrap->socket_dir() == "/run/containerd/s");
  REQUIRE(in->options.has_value());
  CHECK(in->options->type_url() == "runtimeoptions.v1.Options");
  runtimeoptions::v1::Options o;
  REQUIRE(o.ParseFromString(in->options->value()));
  CHECK(o.config_path() == "/tmp/spy/rt.toml");
}

TEST_CASE("start stdin: a BootstrapParams for another task is an error, never options",
          "[start_input]") {
  // Read as an Any these bytes would be type_url "spy1", value "default".
  const std::string bytes = absl::HexStringToBytes(kContainerd234Stdin);
  absl::StatusOr<shim::StartInput> in = shim::ParseStartInput(bytes, StartFlags("other", "default"));
  REQUIRE_FALSE(in.ok());
  CHECK(in.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(in.status().message()).find("BootstrapParams for task \"spy1\"") !=
        std::string::npos);
}

TEST_CASE("start stdin: the options Any of 1.6-2.2 is read as options, never as a BootstrapParams",
          "[start_input]") {
  const std::string bytes = RuncOptionsAny("crun");
  SECTION("usual flags") {
    absl::StatusOr<shim::StartInput> in = shim::ParseStartInput(bytes, StartFlags("c1", "default"));
    REQUIRE(in.ok());
    CHECK_FALSE(in->bootstrap.has_value());
    REQUIRE(in->options.has_value());
    containerd::runc::v1::Options o;
    REQUIRE(in->options->UnpackTo(&o));
    CHECK(o.binary_name() == "crun");
  }
  SECTION("no -id (start by hand)") {
    absl::StatusOr<shim::StartInput> in = shim::ParseStartInput(bytes, StartFlags("", ""));
    REQUIRE(in.ok());
    CHECK_FALSE(in->bootstrap.has_value());
    CHECK(in->options.has_value());
  }
}

// containerd 1.6 reads start's stdout and stderr together as the address: a
// protobuf complaint on stderr breaks every Create. Options whose value is
// not UTF-8 (IoUid 100000, as `ctr run --uidmap` sends) once caused one.
TEST_CASE("start stdin: options that are not UTF-8 are read without a word on stderr",
          "[start_input]") {
  containerd::runc::v1::Options o;
  o.set_io_uid(100000);
  o.set_io_gid(100000);
  google::protobuf::Any any;
  any.PackFrom(o);
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  const int saved = dup(STDERR_FILENO);
  REQUIRE(dup2(p[1], STDERR_FILENO) == STDERR_FILENO);
  absl::StatusOr<shim::StartInput> in =
      shim::ParseStartInput(any.SerializeAsString(), StartFlags("c1", "default"));
  dup2(saved, STDERR_FILENO);
  close(saved);
  char buf[512];
  const ssize_t said = read(p[0], buf, sizeof buf);
  close(p[0]);
  close(p[1]);
  CHECK(said < 0);  // EAGAIN: nothing written
  REQUIRE(in.ok());
  REQUIRE(in->options.has_value());
  containerd::runc::v1::Options back;
  REQUIRE(in->options->UnpackTo(&back));
  CHECK(back.io_uid() == 100000);
}

TEST_CASE("start stdin: a BootstrapParams without options, nothing, and garbage", "[start_input]") {
  BootstrapParams p;
  p.set_instance_id("c2");
  p.set_namespace_("k8s.io");
  p.set_containerd_version("v2.3.0");
  absl::StatusOr<shim::StartInput> in =
      shim::ParseStartInput(p.SerializeAsString(), StartFlags("c2", "k8s.io"));
  REQUIRE(in.ok());
  CHECK(in->bootstrap.has_value());
  CHECK_FALSE(in->options.has_value());

  in = shim::ParseStartInput("", StartFlags("c2", "k8s.io"));
  REQUIRE(in.ok());
  CHECK_FALSE(in->bootstrap.has_value());
  CHECK_FALSE(in->options.has_value());

  in = shim::ParseStartInput(std::string("\xff\xff\xff", 3), StartFlags("c2", "k8s.io"));
  CHECK(in.status().code() == absl::StatusCode::kInvalidArgument);
}


// Writes `bytes` into a pipe, closes its write end if asked, and reads it
// as start's stdin.
absl::StatusOr<std::string> ReadThroughPipe(const std::string& bytes, bool close_writer,
                                            int timeout_ms = 2000) {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  REQUIRE(write(p[1], bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  if (close_writer) close(p[1]);
  absl::StatusOr<std::string> read = shim::ReadStartStdin(p[0], timeout_ms);
  close(p[0]);
  if (!close_writer) close(p[1]);
  return read;
}

TEST_CASE("start stdin: read to its end; a writer that never closes does not hold start up",
          "[start_input]") {
  absl::StatusOr<std::string> read = ReadThroughPipe("options", /*close_writer=*/true);
  REQUIRE(read.ok());
  CHECK(*read == "options");
  read = ReadThroughPipe("", /*close_writer=*/true);
  REQUIRE(read.ok());
  CHECK(read->empty());
  read = ReadThroughPipe("half", /*close_writer=*/false, /*timeout_ms=*/10);
  CHECK(read.status().code() == absl::StatusCode::kDeadlineExceeded);
}
TEST_CASE("start answer: the address for 1.x, the bootstrap JSON of version 3 for 2.x",
          "[start_input]") {
  const std::string a = "unix:///run/containerd-embed/0123456789abcdef/ns-0123456789abcdef.sock";
  CHECK(shim::StartAnswer(a, 2) == a);
  CHECK(shim::StartAnswer(a, 3) ==
        "{\"version\":3,\"address\":\"" + a + "\",\"protocol\":\"ttrpc\"}");
  CHECK(shim::StartAnswer("unix:///a\"b", 3) ==
        "{\"version\":3,\"address\":\"unix:///a\\\"b\",\"protocol\":\"ttrpc\"}");

  // Go build info as containerd 1.7.34 and 2.1.9 carry it.
  CHECK_FALSE(shim::NamesContainerdV2Module(
      "path\tgithub.com/containerd/containerd/cmd/containerd\n"
      "mod\tgithub.com/containerd/containerd\t(devel)\t\n"));
  CHECK(shim::NamesContainerdV2Module(
      "path\tgithub.com/containerd/containerd/v2/cmd/containerd\n"
      "mod\tgithub.com/containerd/containerd/v2\t(devel)\t\n"));
  // Not an ELF file, or none at all: 2, which every containerd accepts.
  CHECK(shim::TaskApiVersionOf("/etc/hostname") == 2);
  CHECK(shim::TaskApiVersionOf("/nonexistent/containerd") == 2);
  CHECK(shim::TaskApiVersionOf("") == 2);
}

TEST_CASE("flags: -info is a flag, as containerd 2.x passes it", "[start_input]") {
  absl::StatusOr<shim::Flags> f = shim::ParseFlags({"-info"});
  REQUIRE(f.ok());
  CHECK(f->info);
  CHECK(f->action.empty());
}
