// Runc with the real runc and crun, a busybox rootfs and containerd-style
// stdio fifos (root). The test process is a child subreaper, so the
// container's init, orphaned when `runc create` exits, becomes our child and
// we can wait for it through a pidfd and reap it.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "shim/oci/runc.h"
#include "shim/oci/stdio.h"
#include "test/oci/oci_test_util.h"
#include "test/oci/test_bundle.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using oci_test::Clock;
using oci_test::ContainerGuard;
using oci_test::kDeadline;
using oci_test::TestBundle;
using shim::oci::ChildStdio;
using shim::oci::OpenStdio;
using shim::oci::ReadPidFile;
using shim::oci::Runc;
using shim::oci::RuncConfig;
using test_support::ReadFile;
using test_support::ScopedTempDir;
using test_support::WriteFile;

// crun 1.8 refuses to run on a hybrid cgroup host whose cgroup2 hierarchy
// has controllers ("cgroups in hybrid mode not supported, drop all
// controllers from cgroupv2"), which is how this kind of host is set up.
// Then crun runs behind a wrapper that hides /sys/fs/cgroup/unified in a
// private mount namespace, so that crun sees plain cgroup v1.
std::string CrunBinary(const ScopedTempDir& tmp) {
  auto controllers = ReadFile("/sys/fs/cgroup/unified/cgroup.controllers");
  struct stat root_st;
  const bool hybrid_with_controllers =
      controllers.ok() && !test_support::SplitLines(*controllers).empty() &&
      stat("/sys/fs/cgroup/cgroup.controllers", &root_st) != 0;
  if (!hybrid_with_controllers) return "crun";
  const std::string wrapper = tmp.Sub("crun");
  REQUIRE_OK(WriteFile(wrapper,
                       "#!/bin/sh\n"
                       "exec unshare --mount --propagation private sh -c "
                       "'umount /sys/fs/cgroup/unified && exec crun \"$@\"' crun \"$@\"\n",
                       0755));
  return wrapper;
}

std::string MakeFifo(const ScopedTempDir& tmp, const char* name) {
  std::string path = tmp.Sub(name);
  REQUIRE(mkfifo(path.c_str(), 0600) == 0);
  return path;
}

// The whole life of a container that prints "hi" and exits 3, with stdout
// and stderr on one containerd-style fifo.
void RunToExit(const std::string& binary_for_test) {
  REQUIRE_OK(test_support::BecomeSubreaper());
  TestBundle b(R"("sh", "-c", "echo hi; exit 3")");
  const std::string binary = binary_for_test == "crun" ? CrunBinary(b.tmp) : binary_for_test;
  Runc runc(b.Config(binary));
  const std::string id = test_support::UniqueName("oci-test");
  const std::string fifo = MakeFifo(b.tmp, "stdout");
  // containerd's reader, open before Create as in cio.
  base::UniqueFd reader(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  REQUIRE(reader.valid());
  auto opened = OpenStdio({.in = "", .out = fifo, .err = fifo});
  REQUIRE_OK(opened);

  ContainerGuard guard(runc, id);
  REQUIRE_OK(runc.Create(id, b.bundle, b.bundle + "/init.pid", std::move(opened->child)));
  auto pid = ReadPidFile(b.bundle + "/init.pid");
  REQUIRE_OK(pid);
  REQUIRE_OK(runc.Start(id));

  const auto deadline = Clock::now() + kDeadline;
  const int status = oci_test::WaitChild(*pid, deadline);
  INFO("wait status " << status);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  std::string got;
  CHECK(oci_test::ReadUntil(reader.get(), "hi\n", &got, deadline));

  // The init is gone: containerd reads NotFound from Kill as "already exited".
  absl::Status kill = runc.Kill(id, SIGKILL, false);
  INFO("kill: " << kill.ToString());
  CHECK(kill.code() == absl::StatusCode::kNotFound);

  REQUIRE_OK(runc.Delete(id, false));
  // Every writer is gone (the shim's copies were closed by Create): EOF.
  std::string rest;
  CHECK(oci_test::ReadToEof(reader.get(), &rest, deadline));
  CHECK(rest.empty());
  // Deleted: now the container does not exist at all.
  CHECK(runc.Kill(id, SIGKILL, false).code() != absl::StatusCode::kOk);
}

TEST_CASE("runc: create, start, exit code and stdout of the init, kill after exit, delete",
          "[root]") {
  RunToExit("runc");
}

TEST_CASE("crun: create, start, exit code and stdout of the init, kill after exit, delete",
          "[root]") {
  RunToExit("crun");
}

TEST_CASE("runc: Ps lists the running init; Kill --all stops it", "[root]") {
  REQUIRE_OK(test_support::BecomeSubreaper());
  TestBundle b(R"("sleep", "1000")");
  Runc runc(b.Config("runc"));
  const std::string id = test_support::UniqueName("oci-test");
  ContainerGuard guard(runc, id);
  REQUIRE_OK(runc.Create(id, b.bundle, b.bundle + "/init.pid", ChildStdio{}));
  auto pid = ReadPidFile(b.bundle + "/init.pid");
  REQUIRE_OK(pid);
  REQUIRE_OK(runc.Start(id));

  auto pids = runc.Ps(id);
  REQUIRE_OK(pids);
  CHECK(*pids == std::vector<pid_t>{*pid});

  REQUIRE_OK(runc.Kill(id, SIGKILL, /*all=*/true));
  const int status = oci_test::WaitChild(*pid, Clock::now() + kDeadline);
  REQUIRE(status != -1);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);

  REQUIRE_OK(runc.Delete(id, false));
  auto after = runc.Ps(id);
  CHECK(after.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(after.status().message()), Catch::Contains("does not exist"));
}

TEST_CASE("runc and crun: Create with a bad bundle returns the runtime's own message",
          "[root]") {
  // crun fails here before touching cgroups, so plain crun works on this host.
  const std::string binary = GENERATE(std::string("runc"), std::string("crun"));
  ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  RuncConfig config;
  config.binary = binary;
  config.root = tmp.Sub("root");
  config.log_path = tmp.Sub("log.json");
  Runc runc(config);
  const std::string id = test_support::UniqueName("oci-test");
  ContainerGuard guard(runc, id);
  absl::Status s = runc.Create(id, tmp.path(), tmp.Sub("init.pid"), ChildStdio{});
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK_THAT(std::string(s.message()), Catch::StartsWith(binary + " create: "));
  CHECK_THAT(std::string(s.message()), Catch::Contains("config.json"));
}

}  // namespace
