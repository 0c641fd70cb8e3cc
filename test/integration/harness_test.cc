// Tests of the test harness itself (test/support/): Subprocess, ScopedTempDir,
// BusyboxRootfs and PrivateContainerd, the last driving a real containerd 1.6
// with runc (io.containerd.runc.v2). Needs root. Later tests use the same
// fixture with our own runtime, io.containerd.embed.v1.
#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "test/support/busybox_rootfs.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace std::chrono_literals;
using test_support::Clock;
using test_support::DeadlineIn;
using test_support::PrivateContainerd;
using test_support::Result;
using test_support::ScopedTempDir;
using test_support::SpawnOptions;
using test_support::Subprocess;

bool PathExists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

// A pidfd, so that "has it exited?" cannot be fooled by pid reuse.
base::UniqueFd OpenPidfd(pid_t pid) {
  return base::UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}
bool Exited(const base::UniqueFd& pidfd) {
  pollfd pfd{pidfd.get(), POLLIN, 0};
  return poll(&pfd, 1, 0) == 1;
}

std::string RunCtrOrDie(PrivateContainerd& cd, std::vector<std::string> args) {
  absl::StatusOr<Result> r = cd.Ctr(std::move(args));
  REQUIRE_OK(r);
  INFO(*r);
  REQUIRE(r->exit_code == 0);
  return r->out;
}

// What must be true once a fixture for `dir` is gone.
void CheckNothingLeft(const std::string& dir) {
  CHECK_FALSE(PathExists(dir));
  absl::StatusOr<std::vector<std::string>> mounts = test_support::MountsUnder(dir);
  REQUIRE_OK(mounts);
  CHECK(mounts->empty());
  CHECK(test_support::ProcessesReferencing(dir).empty());
}

}  // namespace

TEST_CASE("Run: exit code, output, stdin, env, cwd", "[harness]") {
  absl::StatusOr<Result> r = test_support::Run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  REQUIRE_OK(r);
  CHECK(r->exit_code == 3);
  CHECK(r->signal == 0);
  CHECK(r->out == "out\n");
  CHECK(r->err == "err\n");

  SpawnOptions o;
  o.argv = {"sh", "-c", "cat; echo \"$FOO\"; pwd; echo ${HOME-unset}"};
  o.stdin_data = "from stdin\n";
  o.env = {{"FOO", "bar"}, {"HOME", std::nullopt}};
  o.cwd = "/proc";
  r = test_support::Run(std::move(o));
  REQUIRE_OK(r);
  CHECK(r->exit_code == 0);
  CHECK(r->out == "from stdin\nbar\n/proc\nunset\n");

  // Far more than a pipe buffer on both streams: memfds never block the child.
  r = test_support::Run({"sh", "-c", "head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2"});
  REQUIRE_OK(r);
  CHECK(r->out.size() == 3000000);
  CHECK(r->err.size() == 2000000);

  r = test_support::Run({"sh", "-c", "kill -9 $$"});
  REQUIRE_OK(r);
  CHECK(r->signal == 9);
  CHECK(r->exit_code == 137);
}

TEST_CASE("Run: errors and timeouts", "[harness]") {
  absl::StatusOr<Result> r = test_support::Run({"no-such-program-for-harness-test"});
  CHECK(absl::IsNotFound(r.status()));

  SpawnOptions o;
  o.argv = {"true"};
  o.cwd = "/no/such/dir";
  r = test_support::Run(std::move(o));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("chdir") != std::string_view::npos);

  auto start = Clock::now();
  r = test_support::Run({"sh", "-c", "echo partial; exec sleep 600"}, 300ms);
  CHECK(absl::IsDeadlineExceeded(r.status()));
  CHECK(r.status().message().find("partial") != std::string_view::npos);
  CHECK(Clock::now() - start < 20s);
}

TEST_CASE("Subprocess: wait for output, kill, destructor reaps", "[harness]") {
  SpawnOptions o;
  o.argv = {"sh", "-c", "echo starting; echo ready >&2; exec sleep 600"};
  absl::StatusOr<Subprocess> p = Subprocess::Spawn(std::move(o));
  REQUIRE_OK(p);
  REQUIRE_OK(p->WaitForOutput("ready", DeadlineIn(30s), /*from_stderr=*/true));
  CHECK(p->out() == "starting\n");
  CHECK(absl::IsDeadlineExceeded(p->Wait(DeadlineIn(10ms)).status()));
  absl::StatusOr<test_support::ExitStatus> st = p->Kill(SIGTERM, DeadlineIn(30s));
  REQUIRE_OK(st);
  CHECK(st->signal == SIGTERM);
  CHECK_FALSE(p->running());

  // Exits without printing the awaited text: reported, not waited out.
  o = {};
  o.argv = {"sh", "-c", "echo other"};
  p = Subprocess::Spawn(std::move(o));
  REQUIRE_OK(p);
  CHECK(absl::IsFailedPrecondition(p->WaitForOutput("never", DeadlineIn(60s))));

  // The destructor kills and reaps.
  o = {};
  o.argv = {"sleep", "600"};
  p = Subprocess::Spawn(std::move(o));
  REQUIRE_OK(p);
  base::UniqueFd pidfd = OpenPidfd(p->pid());
  REQUIRE(pidfd.valid());
  *p = Subprocess();
  CHECK(Exited(pidfd));

  // A stdin pipe.
  o = {};
  o.argv = {"sh", "-c", "read line; echo \"got $line\""};
  o.stdin_pipe = true;
  p = Subprocess::Spawn(std::move(o));
  REQUIRE_OK(p);
  REQUIRE(write(p->stdin_pipe().get(), "x\n", 2) == 2);
  p->stdin_pipe().Reset();
  st = p->Wait(DeadlineIn(30s));
  REQUIRE_OK(st);
  CHECK(st->success());
  CHECK(p->out() == "got x\n");
}

TEST_CASE("ScopedTempDir: unique, removed with what is mounted below", "[harness]") {
  std::string path;
  {
    ScopedTempDir t;
    REQUIRE_OK(t.status());
    path = t.path();
    ScopedTempDir other;
    CHECK(other.path() != path);
    REQUIRE_OK(test_support::MakeDirs(t.Sub("a/b/mnt")));
    REQUIRE_OK(test_support::WriteFile(t.Sub("a/file"), "x"));
    REQUIRE(mount("tmpfs", t.Sub("a/b/mnt").c_str(), "tmpfs", 0, "size=1m") == 0);
    REQUIRE(mount("tmpfs", t.Sub("a/b/mnt").c_str(), "tmpfs", 0, "size=1m") == 0);  // stacked
    REQUIRE_OK(test_support::WriteFile(t.Sub("a/b/mnt/inside"), "y"));
    REQUIRE(test_support::MountsUnder(path)->size() == 2);
  }
  CheckNothingLeft(path);
  CHECK(test_support::UniqueName("x") != test_support::UniqueName("x"));
}

TEST_CASE("BusyboxRootfs: a chroot-able shell", "[harness]") {
  ScopedTempDir t;
  REQUIRE_OK(t.status());
  REQUIRE_OK(test_support::BusyboxRootfs(t.Sub("rootfs")));
  for (const char* p : {"bin/busybox", "bin/sh", "bin/sleep", "proc", "dev", "sys", "tmp", "etc/passwd"}) {
    INFO(p);
    CHECK(PathExists(t.Sub("rootfs/") + p));
  }
  SpawnOptions o;
  o.argv = {"/usr/sbin/chroot", t.Sub("rootfs"), "/bin/sh", "-c", "echo in chroot; ls /bin | grep -c ."};
  o.env = {{"PATH", "/bin"}};
  absl::StatusOr<Result> r = test_support::Run(std::move(o));
  REQUIRE_OK(r);
  INFO(*r);
  CHECK(r->exit_code == 0);
  CHECK(r->out.starts_with("in chroot\n"));
}

TEST_CASE("PrivateContainerd: ctr run with runc, exit code and stdout, clean teardown",
          "[harness][containerd]") {
  absl::StatusOr<std::unique_ptr<PrivateContainerd>> started = PrivateContainerd::Start();
  REQUIRE_OK(started);
  std::unique_ptr<PrivateContainerd> cd = std::move(*started);
  const std::string dir = cd->dir();
  CHECK(cd->path_env().starts_with(test_support::DefaultShimDir() + ":"));
  pid_t containerd = cd->containerd_pid();
  REQUIRE(containerd > 0);
  base::UniqueFd containerd_pidfd = OpenPidfd(containerd);
  REQUIRE(containerd_pidfd.valid());

  std::string version = RunCtrOrDie(*cd, {"version"});
  CHECK(version.find("Server:") != std::string::npos);
  CHECK(PathExists(cd->ttrpc_address()));
  CHECK(cd->LogContains("containerd successfully booted"));

  absl::StatusOr<std::string> rootfs = cd->MakeBusyboxRootfs();
  REQUIRE_OK(rootfs);
  auto run = [&](const std::string& script) {
    // --rootfs is a boolean flag: it must come last, and the rootfs directory
    // is then the first positional argument.
    absl::StatusOr<Result> r =
        cd->Ctr({"run", "--rm", "--runtime", "io.containerd.runc.v2", "--env", "PATH=/bin",
                 "--rootfs", *rootfs, test_support::UniqueName("harness"), "sh", "-c", script});
    REQUIRE_OK(r);
    return *r;
  };
  Result r = run("exit 7");
  INFO(r);
  CHECK(r.exit_code == 7);
  r = run("echo hello; echo to-stderr >&2");
  INFO(r);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("hello") != std::string::npos);
  CHECK(r.err.find("to-stderr") != std::string::npos);
  CHECK(RunCtrOrDie(*cd, {"containers", "ls", "-q"}).empty());  // --rm removed them
  CHECK(cd->LogContains("io.containerd.runc.v2"));

  cd.reset();
  CHECK(Exited(containerd_pidfd));
  CheckNothingLeft(dir);
}

TEST_CASE("PrivateContainerd: teardown kills running tasks and shims; restart keeps tasks",
          "[harness][containerd]") {
  absl::StatusOr<std::unique_ptr<PrivateContainerd>> started = PrivateContainerd::Start();
  REQUIRE_OK(started);
  std::unique_ptr<PrivateContainerd> cd = std::move(*started);
  const std::string dir = cd->dir();
  absl::StatusOr<std::string> rootfs = cd->MakeBusyboxRootfs();
  REQUIRE_OK(rootfs);

  // A detached task in its own namespace, and a foreground `ctr run`.
  const std::string ns = test_support::UniqueName("ns");
  const std::string detached = test_support::UniqueName("detached");
  RunCtrOrDie(*cd, {"-n", ns, "run", "-d", "--env", "PATH=/bin", "--rootfs", *rootfs, detached,
                    "sleep", "600"});
  const std::string fg = test_support::UniqueName("fg");
  absl::StatusOr<Subprocess> ctr_run = cd->RunCtrAsync(
      {"run", "--env", "PATH=/bin", "--rootfs", *rootfs, fg, "sh", "-c", "echo ready; exec sleep 600"});
  REQUIRE_OK(ctr_run);
  REQUIRE_OK(ctr_run->WaitForOutput("ready", DeadlineIn(60s)));

  // Container processes, found through the task list.
  std::vector<base::UniqueFd> task_pidfds;
  for (const auto& [space, id] : {std::pair{ns, detached}, std::pair{std::string("default"), fg}}) {
    std::string tasks = RunCtrOrDie(*cd, {"-n", space, "tasks", "ls"});
    INFO(tasks);
    for (const std::string& line : test_support::SplitLines(tasks)) {
      std::vector<std::string> f = test_support::Split(line, ' ');
      if (f.size() >= 3 && f[0] == id) {
        CHECK(f[2] == "RUNNING");
        task_pidfds.push_back(OpenPidfd(std::stoi(f[1])));
      }
    }
  }
  REQUIRE(task_pidfds.size() == 2);

  // containerd comes back and finds the running tasks again.
  pid_t before = cd->containerd_pid();
  REQUIRE_OK(cd->Restart());
  CHECK(cd->containerd_pid() != before);
  CHECK(RunCtrOrDie(*cd, {"-n", ns, "tasks", "ls"}).find("RUNNING") != std::string::npos);

  REQUIRE_OK(cd->Shutdown());
  for (const base::UniqueFd& fd : task_pidfds) CHECK(Exited(fd));
  absl::StatusOr<test_support::ExitStatus> st = ctr_run->Wait(DeadlineIn(60s));
  REQUIRE_OK(st);
  CHECK_FALSE(st->success());
  CheckNothingLeft(dir);
}

TEST_CASE("PrivateContainerd: directories of fixtures whose test died are swept",
          "[harness][containerd]") {
  ScopedTempDir base("harness-sweep-");
  REQUIRE_OK(base.status());
  // What a SIGKILLed test leaves: its dir, a mount, a process using it.
  const std::string stale = base.Sub("embed-ctrd-dead01");
  REQUIRE_OK(test_support::MakeDirs(stale + "/state/mnt"));
  REQUIRE_OK(test_support::WriteFile(stale + "/owner", "999999999 12345\n"));
  REQUIRE(mount("tmpfs", (stale + "/state/mnt").c_str(), "tmpfs", 0, "size=1m") == 0);
  SpawnOptions o;
  o.argv = {"sleep", "600"};
  o.cwd = stale;
  absl::StatusOr<Subprocess> user = Subprocess::Spawn(std::move(o));
  REQUIRE_OK(user);
  // A live fixture's dir (owner = this process) and one still starting (no
  // owner file yet, fresh) are left alone.
  test_support::PrivateContainerdOptions options;
  options.base_dir = base.path();
  absl::StatusOr<std::unique_ptr<PrivateContainerd>> live = PrivateContainerd::Start(options);
  REQUIRE_OK(live);
  const std::string starting = base.Sub("embed-ctrd-new001");
  REQUIRE_OK(test_support::MakeDirs(starting));

  CHECK(test_support::SweepStaleContainerdDirs(base.path()) == 0);  // Start() swept it
  CHECK_FALSE(PathExists(stale));
  absl::StatusOr<test_support::ExitStatus> st = user->Wait(DeadlineIn(30s));
  REQUIRE_OK(st);
  CHECK(st->signal == SIGKILL);
  CHECK(PathExists((*live)->dir()));
  CHECK(PathExists(starting));
  CHECK(RunCtrOrDie(**live, {"version"}).find("Server:") != std::string::npos);
}

TEST_CASE("PrivateContainerd: a containerd that cannot start fails fast with its log",
          "[harness][containerd]") {
  test_support::PrivateContainerdOptions o;
  o.extra_config = "this is = = not toml\n";
  auto start = Clock::now();
  absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start(o);
  REQUIRE_FALSE(cd.ok());
  INFO(cd.status().ToString());
  CHECK(absl::IsFailedPrecondition(cd.status()));
  CHECK(cd.status().message().find("containerd exited before it was ready") !=
        std::string_view::npos);
  CHECK(Clock::now() - start < 25s);
}
