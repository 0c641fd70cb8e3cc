// Runc::Exec and terminals with the real runc and a busybox container (root).
// Exec exit codes come from a real exit monitor, which the spawn hook told
// about `runc exec` before runc could fork anything. The test process is a
// child subreaper, so the container's processes end up as our children and
// are reaped here.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "bpf/exit_monitor.h"
#include "shim/oci/console.h"
#include "shim/oci/runc.h"
#include "test/bpf/exit_monitor_testing.h"
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
using shim::oci::ConsoleSocket;
using shim::oci::CreateOptions;
using shim::oci::ExecOptions;
using shim::oci::ReadPidFile;
using shim::oci::Runc;
using shim::oci::SetWindowSize;

// An OCI Process as containerd sends it for an exec (args: a JSON list body).
std::string ProcessJson(const std::string& args_json, bool terminal = false) {
  return fmt::format(
      R"({{"terminal":{},"user":{{"uid":0,"gid":0}},"args":[{}],)"
      R"("env":["PATH=/bin","TERM=xterm"],"cwd":"/"}})",
      terminal, args_json);
}

// Reaps the container's processes that were left to us (we are their
// subreaper) once everything else is torn down.
struct OrphanReaper {
  ~OrphanReaper() { test_support::ReapOrphans(); }
};

// A started container whose init sleeps, to exec in; deleted at the end.
struct RunningContainer {
  RunningContainer()
      : bundle(R"("sleep", "1000")"),
        runc(bundle.Config("runc")),
        id(test_support::UniqueName("oci-exec")),
        guard(runc, id) {
    REQUIRE_OK(runc.Create(id, bundle.bundle, bundle.bundle + "/init.pid", ChildStdio{}));
    auto pid = ReadPidFile(bundle.bundle + "/init.pid");
    REQUIRE_OK(pid);
    init_pid = *pid;
    REQUIRE_OK(runc.Start(id));
  }
  std::string PidFile(const std::string& exec_id) const {
    return fmt::format("{}/{}.pid", bundle.bundle, exec_id);
  }

  OrphanReaper reaper;  // destroyed last
  TestBundle bundle;
  Runc runc;
  std::string id;
  ContainerGuard guard;
  pid_t init_pid = 0;
};

void WriteAll(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n > 0);
    text.remove_prefix(static_cast<size_t>(n));
  }
}

TEST_CASE("runc exec: a hook tracks runc as a spawner; exit codes from the exit monitor",
          "[root]") {
  REQUIRE_OK(test_support::BecomeSubreaper());
  bpf_test::TestPins pins;
  auto monitor = bpf_test::OpenMonitor(pins);
  RunningContainer c;

  std::vector<pid_t> runtimes;
  auto exec = [&](const std::string& exec_id, const std::string& args_json) {
    ExecOptions options;
    options.process_json = ProcessJson(args_json);
    options.pid_file = c.PidFile(exec_id);
    options.on_spawned = [&](pid_t runtime_pid) {
      runtimes.push_back(runtime_pid);
      return monitor->TrackSpawner(runtime_pid);
    };
    REQUIRE_OK(c.runc.Exec(c.id, options, ChildStdio{}));
    auto pid = ReadPidFile(options.pid_file);
    REQUIRE_OK(pid);
    return *pid;
  };
  const pid_t exit3 = exec("exit3", R"("sh", "-c", "exit 3")");
  // `true` is gone microseconds after runc started it: only tracking that
  // began before runc could fork catches its exit.
  std::vector<pid_t> quick;
  for (int i = 0; i < 5; ++i) quick.push_back(exec(fmt::format("true{}", i), R"("true")"));
  CHECK(runtimes.size() == 6);

  bpf_test::Collector col;
  const bool all = bpf_test::DrainUntil(*monitor, col, [&] {
    if (col.count(exit3) == 0) return false;
    for (pid_t pid : quick) {
      if (col.count(pid) == 0) return false;
    }
    return true;
  });
  REQUIRE(all);
  CHECK(col.only(exit3).wait_status == (3 << 8));  // exited with 3
  for (pid_t pid : quick) CHECK(col.only(pid).wait_status == 0);
  // runc itself was tracked too (it is the spawner) and has exited.
  for (pid_t pid : runtimes) CHECK(col.count(pid) == 1);

  // The exec'd processes were left to us: wait(2) agrees with the monitor.
  CHECK(oci_test::WaitChild(exit3, Clock::now() + kDeadline) == col.only(exit3).wait_status);
}

TEST_CASE("runc exec of a missing binary: runc's error text; the container still runs",
          "[root]") {
  REQUIRE_OK(test_support::BecomeSubreaper());
  RunningContainer c;
  ExecOptions options;
  options.process_json = ProcessJson(R"("/no/such/binary")");
  options.pid_file = c.PidFile("missing");
  absl::Status s = c.runc.Exec(c.id, options, ChildStdio{});
  INFO(s.ToString());
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK_THAT(std::string(s.message()), Catch::StartsWith("runc exec: "));
  CHECK_THAT(std::string(s.message()), Catch::Contains("/no/such/binary"));
  CHECK_THAT(std::string(s.message()), Catch::Contains("no such file or directory"));

  auto pids = c.runc.Ps(c.id);
  REQUIRE_OK(pids);
  CHECK(*pids == std::vector<pid_t>{c.init_pid});
  // And the next exec works.
  options.process_json = ProcessJson(R"("true")");
  options.pid_file = c.PidFile("after");
  REQUIRE_OK(c.runc.Exec(c.id, options, ChildStdio{}));
  auto pid = ReadPidFile(options.pid_file);
  REQUIRE_OK(pid);
  const int status = oci_test::WaitChild(*pid, Clock::now() + kDeadline);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("runc exec with a terminal: the master arrives, resizes, and talks", "[root]") {
  REQUIRE_OK(test_support::BecomeSubreaper());
  RunningContainer c;
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);
  ExecOptions options;
  options.process_json = ProcessJson(R"("sh")", /*terminal=*/true);
  options.pid_file = c.PidFile("tty");
  options.console_socket = console->path();
  REQUIRE_OK(c.runc.Exec(c.id, options, ChildStdio{}));
  auto pid = ReadPidFile(options.pid_file);
  REQUIRE_OK(pid);

  // runc has exited; its connection waited in the backlog.
  auto master = console->ReceiveMaster(kDeadline);
  REQUIRE_OK(master);
  CHECK(isatty(master->get()));
  REQUIRE_OK(SetWindowSize(master->get(), 100, 30));

  const auto deadline = Clock::now() + kDeadline;
  std::string got;
  WriteAll(master->get(), "stty size\n");
  CHECK(oci_test::ReadUntil(master->get(), "30 100", &got, deadline));
  WriteAll(master->get(), "echo hi\n");
  // The terminal echoes what was typed, then the shell's output.
  CHECK(oci_test::ReadUntil(master->get(), "echo hi", &got, deadline));
  CHECK(oci_test::ReadUntil(master->get(), "\nhi\r\n", &got, deadline));
  INFO("terminal output: " << got);
  WriteAll(master->get(), "exit 5\n");
  const int status = oci_test::WaitChild(*pid, deadline);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 5);
}

TEST_CASE("runc create with a terminal: the init's master over the console socket",
          "[root]") {
  REQUIRE_OK(test_support::BecomeSubreaper());
  OrphanReaper reaper;
  TestBundle b(R"("sh", "-c", "read line; stty size; echo got $line; exit 4")",
               /*terminal=*/true);
  Runc runc(b.Config("runc"));
  const std::string id = test_support::UniqueName("oci-tty");
  ContainerGuard guard(runc, id);
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);

  CreateOptions options;
  options.pid_file = b.bundle + "/init.pid";
  options.console_socket = console->path();
  REQUIRE_OK(runc.Create(id, b.bundle, options, ChildStdio{}));
  auto pid = ReadPidFile(options.pid_file);
  REQUIRE_OK(pid);
  auto master = console->ReceiveMaster(kDeadline);
  REQUIRE_OK(master);
  CHECK(isatty(master->get()));
  // Sized before the init runs, as containerd's ResizePty may come early.
  REQUIRE_OK(SetWindowSize(master->get(), 120, 40));
  REQUIRE_OK(runc.Start(id));

  const auto deadline = Clock::now() + kDeadline;
  WriteAll(master->get(), "hello\n");
  std::string got;
  CHECK(oci_test::ReadUntil(master->get(), "got hello", &got, deadline));
  INFO("terminal output: " << got);
  CHECK_THAT(got, Catch::Contains("40 120"));
  const int status = oci_test::WaitChild(*pid, deadline);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 4);
}

}  // namespace
