// Runc::Checkpoint and Runc::Restore with the real runc and CRIU (root).
// Where `criu check` passes, a container goes through a real round trip;
// where it fails (this project's machine: criu 3.17 and kernel 6.18 disagree
// about the vDSO), the round trip skips with CRIU's reason, and the failure
// path is checked instead: FailedPrecondition carrying CRIU's own reason,
// and the container running on.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "shim/oci/runc.h"
#include "test/oci/oci_test_util.h"
#include "test/oci/test_bundle.h"
#include "test/support/criu.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using oci_test::Clock;
using oci_test::ContainerGuard;
using oci_test::kDeadline;
using oci_test::TestBundle;
using shim::oci::CheckpointOptions;
using shim::oci::ChildStdio;
using shim::oci::ReadPidFile;
using shim::oci::RestoreOptions;
using shim::oci::Runc;

// The part of `criu check`'s complaint a message must carry.
std::string FirstReason(const absl::Status& criu_check) {
  std::string text(criu_check.message());
  size_t colon = text.find(": ");
  std::string reasons = colon == std::string::npos ? text : text.substr(colon + 2);
  return reasons.substr(0, reasons.find(';'));
}

// A running `sleep` container of a fresh bundle; returns its pid.
pid_t StartSleeper(const Runc& runc, const TestBundle& b, const std::string& id) {
  REQUIRE_OK(runc.Create(id, b.bundle, b.bundle + "/init.pid", ChildStdio{}));
  auto pid = ReadPidFile(b.bundle + "/init.pid");
  REQUIRE_OK(pid);
  REQUIRE_OK(runc.Start(id));
  return *pid;
}

bool Running(pid_t pid) {
  auto stat = test_support::ReadFile(fmt::format("/proc/{}/stat", pid));
  if (!stat.ok()) return false;
  size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() &&
         (*stat)[paren + 2] != 'Z' && (*stat)[paren + 2] != 'X';
}

TEST_CASE("runc: Checkpoint that CRIU refuses is FailedPrecondition with CRIU's reason; "
          "the container runs on", "[root][checkpoint]") {
  const absl::Status criu = test_support::CriuCheck();
  if (absl::IsNotFound(criu)) FAIL(criu.message());
  REQUIRE_OK(test_support::BecomeSubreaper());
  TestBundle b(R"("sleep", "1000")");
  const std::string id = test_support::UniqueName("oci-ckpt");

  SECTION("the machine's own CRIU, leaving it running, into an image path") {
    if (criu.ok()) {
      WARN("skipped: criu check passes here, so this failure cannot be provoked");
      return;
    }
    Runc runc(b.Config("runc"));
    ContainerGuard guard(runc, id);
    const pid_t pid = StartSleeper(runc, b, id);
    CheckpointOptions o;
    o.criu.image_path = b.tmp.Sub("images");
    o.criu.work_path = b.tmp.Sub("work");
    o.leave_running = true;
    absl::Status st = runc.Checkpoint(id, o);
    INFO(st.ToString());
    CHECK(absl::IsFailedPrecondition(st));
    CHECK_THAT(std::string(st.message()), Catch::Contains(FirstReason(criu)));
    CHECK_THAT(std::string(st.message()), Catch::Contains(o.criu.work_path + "/dump.log"));
    CHECK(std::string(st.message()).find('\n') == std::string::npos);
    CHECK(Running(pid));
    // Still a container runc can signal and list.
    auto pids = runc.Ps(id);
    REQUIRE_OK(pids);
    CHECK(*pids == std::vector<pid_t>{pid});
  }
  SECTION("a CRIU that is not there, stopping it (not leave-running)") {
    auto config = b.Config("runc");
    config.criu = b.tmp.Sub("no-such-criu");
    Runc runc(config);
    ContainerGuard guard(runc, id);
    const pid_t pid = StartSleeper(runc, b, id);
    CheckpointOptions o;
    o.criu.image_path = b.tmp.Sub("images");
    absl::Status st = runc.Checkpoint(id, o);
    INFO(st.ToString());
    CHECK(absl::IsFailedPrecondition(st));
    CHECK_THAT(std::string(st.message()), Catch::Contains("no-such-criu"));
    CHECK(Running(pid));
  }
}

TEST_CASE("runc: Restore from images CRIU cannot use fails with its reason, and leaves no "
          "container", "[root][checkpoint]") {
  const absl::Status criu = test_support::CriuCheck();
  if (absl::IsNotFound(criu)) FAIL(criu.message());
  REQUIRE_OK(test_support::BecomeSubreaper());
  TestBundle b(R"("sleep", "1000")");
  Runc runc(b.Config("runc"));
  const std::string id = test_support::UniqueName("oci-restore");
  ContainerGuard guard(runc, id);
  // What runc reads first; CRIU then finds no images to restore.
  const std::string images = b.tmp.Sub("images");
  REQUIRE_OK(test_support::MakeDirs(images));
  REQUIRE_OK(test_support::WriteFile(images + "/descriptors.json",
                                     R"(["/dev/null","/dev/null","/dev/null"])"));
  RestoreOptions o;
  o.criu.image_path = images;
  o.criu.work_path = b.tmp.Sub("work");
  o.pid_file = b.bundle + "/init.pid";
  absl::Status st = runc.Restore(id, b.bundle, o, ChildStdio{});
  INFO(st.ToString());
  CHECK(absl::IsFailedPrecondition(st));
  CHECK_THAT(std::string(st.message()), Catch::Contains("restore.log"));
  if (!criu.ok()) CHECK_THAT(std::string(st.message()), Catch::Contains(FirstReason(criu)));
  CHECK(runc.Ps(id).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("runc: Checkpoint, then Restore runs the container again", "[root][checkpoint]") {
  const absl::Status criu = test_support::CriuCheck();
  if (!criu.ok()) {
    WARN("skipped: " << criu.message());
    return;
  }
  REQUIRE_OK(test_support::BecomeSubreaper());
  TestBundle b(R"("sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.05; done")");
  Runc runc(b.Config("runc"));
  const std::string id = test_support::UniqueName("oci-roundtrip");
  ContainerGuard guard(runc, id);
  const pid_t pid = StartSleeper(runc, b, id);
  CheckpointOptions o;
  o.criu.image_path = b.tmp.Sub("images");
  o.criu.work_path = b.tmp.Sub("work");
  REQUIRE_OK(runc.Checkpoint(id, o));  // not leave-running: it stops
  CHECK(oci_test::WaitChild(pid, Clock::now() + kDeadline) != -1);
  REQUIRE_OK(runc.Delete(id, /*force=*/true));

  RestoreOptions r;
  r.criu = o.criu;
  r.criu.work_path = b.tmp.Sub("restore-work");
  r.pid_file = b.bundle + "/restored.pid";
  REQUIRE_OK(runc.Restore(id, b.bundle, r, ChildStdio{}));
  auto restored = ReadPidFile(r.pid_file);
  REQUIRE_OK(restored);
  CHECK(Running(*restored));
  auto pids = runc.Ps(id);
  REQUIRE_OK(pids);
  CHECK(!pids->empty());
  REQUIRE_OK(runc.Kill(id, SIGKILL, /*all=*/true));
}

}  // namespace
