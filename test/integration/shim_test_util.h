// What the containerd integration tests of containerd-shim-embed-v1 share
// (shim_e2e_util.h and survival_util.h build on it): the shim's instance
// computed from the documented contract, processes watched through /proc and
// pidfds, ctr helpers, and ShimFixture, the base of the per-case fixtures
// (e2e::E2E, survival::Survival) with their common teardown.
//
// Where the shim keeps its things is computed here from the documented
// contract (shim/store/paths.h), not taken from the shim: /run/containerd-embed
// (or $EMBED_SHIM_RUN_DIR) / <16 hex digits of FNV-1a(containerd socket path)>,
// with shim.sock, shim.log and state/<ns>/<id>.pb, and the pins in
// /sys/fs/bpf/containerd-embed/<instance>.
#pragma once

#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "test/support/fs_util.h"
#include "test/support/peers.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace shim_test {

using namespace std::chrono_literals;
using test_support::Clock;
using test_support::Deadline;
using test_support::DeadlineIn;
using test_support::PrivateContainerd;
using test_support::PrivateContainerdOptions;
using test_support::Result;
using test_support::SpawnOptions;
using test_support::Subprocess;
using test_support::UniqueName;

inline constexpr char kRuntime[] = "io.containerd.embed.v1";

inline bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

inline bool PathExists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

inline int MillisUntil(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
}

// ---------------------------------------------------------------------------
// Failure tracking: the fixtures keep the logs of failed cases only. Set by
// the Catch listener in shim_test_util.cc (linked into each executable).

inline bool& CurrentCaseFailed() {
  static bool failed = false;
  return failed;
}

// ---------------------------------------------------------------------------
// The shim's instance, from the contract in shim/store/paths.h.

struct Instance {
  std::string name;    // 16 hex digits
  std::string dir;     // <run>/<name>
  std::string socket;  // <dir>/shim.sock
  std::string log;     // <dir>/shim.log
  std::string state;   // <dir>/state
  std::string pins;    // /sys/fs/bpf/containerd-embed/<name>
  std::string Record(const std::string& ns, const std::string& id) const {
    return fmt::format("{}/{}/{}.pb", state, ns, id);
  }
};

inline Instance InstanceFor(const std::string& containerd_address) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, 64 bit
  for (unsigned char c : containerd_address) {
    h ^= c;
    h *= 1099511628211ull;
  }
  const char* run = std::getenv("EMBED_SHIM_RUN_DIR");
  std::string root = run && *run ? run : "/run/containerd-embed";
  Instance i;
  i.name = fmt::format("{:016x}", h);
  i.dir = root + "/" + i.name;
  i.socket = i.dir + "/shim.sock";
  i.log = i.dir + "/shim.log";
  i.state = i.dir + "/state";
  i.pins = "/sys/fs/bpf/containerd-embed/" + i.name;
  return i;
}

// ---------------------------------------------------------------------------
// Processes.

inline std::vector<std::string> Cmdline(pid_t pid) {
  absl::StatusOr<std::string> raw = test_support::ReadFile(fmt::format("/proc/{}/cmdline", pid));
  if (!raw.ok()) return {};
  return test_support::Split(*raw, '\0');
}

inline std::string CmdlineText(pid_t pid) {
  std::string s;
  for (const std::string& a : Cmdline(pid)) s += (s.empty() ? "" : " ") + a;
  return s;
}

// /proc/<pid>/exe without a " (deleted)" suffix (the build replaced the
// binary meanwhile); nullopt for a zombie or a process that is gone.
inline std::optional<std::string> ExePath(pid_t pid) {
  char buf[4096];
  ssize_t n = readlink(fmt::format("/proc/{}/exe", pid).c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  std::string exe(buf, static_cast<size_t>(n));
  if (exe.ends_with(" (deleted)")) exe.resize(exe.size() - 10);
  return exe;
}

// Every pid in /proc.
inline std::vector<pid_t> AllPids() {
  std::vector<pid_t> out;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir("/proc"), &closedir);
  if (!d) return out;
  while (dirent* e = readdir(d.get())) {
    char* end = nullptr;
    long pid = strtol(e->d_name, &end, 10);
    if (pid > 0 && *end == '\0') out.push_back(static_cast<pid_t>(pid));
  }
  return out;
}

// A pidfd: "has it exited?" cannot be fooled by pid reuse.
inline base::UniqueFd OpenPidfd(pid_t pid) {
  return base::UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

// Waits until the process behind `pidfd` has exited (zombie or reaped).
inline bool WaitExited(const base::UniqueFd& pidfd, Deadline deadline) {
  for (;;) {
    pollfd p{pidfd.get(), POLLIN, 0};
    int r = poll(&p, 1, MillisUntil(deadline));
    if (r == 1) return true;
    if (r < 0 && errno == EINTR) continue;
    if (Clock::now() >= deadline) return false;
  }
}

inline bool Exited(const base::UniqueFd& pidfd) {
  pollfd p{pidfd.get(), POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

inline bool Alive(pid_t pid) {
  base::UniqueFd fd = OpenPidfd(pid);
  return fd && !Exited(fd);
}

inline bool SendSignal(const base::UniqueFd& pidfd, int sig) {
  return syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0) == 0;
}

// ---------------------------------------------------------------------------
// ctr.

struct Task {
  std::string id;
  pid_t pid = 0;
  std::string status;
};

// The output of `ctr task ls`, keyed by task id.
inline std::map<std::string, Task> ParseTasks(const std::string& out) {
  std::map<std::string, Task> tasks;
  for (const std::string& line : test_support::SplitLines(out)) {
    std::vector<std::string> f = test_support::Split(line, ' ');
    if (f.size() < 3 || f[0] == "TASK") continue;
    tasks[f[0]] = Task{f[0], static_cast<pid_t>(std::stol(f[1])), f[2]};
  }
  return tasks;
}

inline std::string TasksText(const std::map<std::string, Task>& tasks) {
  std::string s;
  for (const auto& [id, t] : tasks) s += fmt::format("{} {} {}\n", id, t.pid, t.status);
  return s;
}

// `ctr -n ns tasks ls` (must succeed), keyed by task id.
inline std::map<std::string, Task> ListTasks(PrivateContainerd& cd, const std::string& ns) {
  absl::StatusOr<Result> r = cd.Ctr({"-n", ns, "tasks", "ls"});
  REQUIRE_OK(r);
  INFO(*r);
  REQUIRE(r->exit_code == 0);
  return ParseTasks(r->out);
}

// ctr (must exit 0); returns stdout.
inline std::string CtrOk(PrivateContainerd& cd, std::vector<std::string> args,
                         Clock::duration timeout = 60s) {
  absl::StatusOr<Result> r = cd.Ctr(std::move(args), timeout);
  REQUIRE_OK(r);
  INFO(*r);
  REQUIRE(r->exit_code == 0);
  return r->out;
}

// `ctr -n ns run <flags> --runtime io.containerd.embed.v1 --env PATH=/bin
//  --rootfs ROOTFS ID CMD...` (--rootfs must be the last flag).
inline std::vector<std::string> RunArgs(const std::string& ns, std::vector<std::string> flags,
                                        const std::string& rootfs, const std::string& id,
                                        std::vector<std::string> cmd) {
  std::vector<std::string> a = {"-n", ns, "run"};
  a.insert(a.end(), flags.begin(), flags.end());
  for (const char* s : {"--runtime", kRuntime, "--env", "PATH=/bin", "--rootfs"}) a.push_back(s);
  a.push_back(rootfs);
  a.push_back(id);
  a.insert(a.end(), cmd.begin(), cmd.end());
  return a;
}

// Task `id` is RUNNING in `ctr task ls`; returns its pid.
inline pid_t RequireRunning(PrivateContainerd& cd, const std::string& ns, const std::string& id) {
  std::map<std::string, Task> tasks = ListTasks(cd, ns);
  INFO(TasksText(tasks));
  REQUIRE(tasks.contains(id));
  REQUIRE(tasks[id].status == "RUNNING");
  REQUIRE(tasks[id].pid > 0);
  return tasks[id].pid;
}

// A detached container; returns its task pid (from `ctr task ls`).
inline pid_t RunDetached(PrivateContainerd& cd, const std::string& ns, const std::string& rootfs,
                         const std::string& id, std::vector<std::string> cmd,
                         std::vector<std::string> extra_flags = {}) {
  std::vector<std::string> flags = {"-d"};
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  CtrOk(cd, RunArgs(ns, flags, rootfs, id, std::move(cmd)));
  return RequireRunning(cd, ns, id);
}

// ---------------------------------------------------------------------------
// Which containerd: $EMBED_CONTAINERD (test/support/peers.h). A run whose
// peer is absent never gets here: the listener in shim_test_util.cc skips it.

inline const test_support::ContainerdUnderTest& UnderTest() {
  static const test_support::ContainerdUnderTest under_test = [] {
    absl::StatusOr<test_support::ContainerdUnderTest> c = test_support::ContainerdFromEnv();
    REQUIRE_OK(c);
    return *c;
  }();
  return under_test;
}

// `o` set up for the containerd under test: its binaries, its config
// version, and its bin dir on containerd's PATH after the shim's.
inline void UseContainerdUnderTest(PrivateContainerdOptions& o) {
  const test_support::ContainerdUnderTest& c = UnderTest();
  o.containerd = c.containerd;
  o.ctr = c.ctr;
  o.config_version = c.config_version();
  if (!o.extra_path) o.extra_path = std::vector<std::string>{test_support::DefaultShimDir()};
  if (!c.bin_dir.empty()) o.extra_path->push_back(c.bin_dir);
}

// ---------------------------------------------------------------------------
// The fixtures' base.

// Where the logs of the failed current case go: $<env_var> (default
// `default_base`) / <case name>-<pid>.
inline std::string CaseLogDir(const char* env_var, const char* default_base) {
  const char* base = std::getenv(env_var);
  std::string name = Catch::getResultCapture().getCurrentTestName();
  for (char& c : name) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  if (name.size() > 80) name.resize(80);
  return fmt::format("{}/{}-{}", base && *base ? base : default_base, name, getpid());
}

// A PrivateContainerd for one test case and the shim instance serving it.
// The derived fixture's destructor saves the logs of a failed case
// (SaveCaseLogs) and tears down (TeardownContainerd).
class ShimFixture {
 public:
  ShimFixture(const ShimFixture&) = delete;
  ShimFixture& operator=(const ShimFixture&) = delete;

  PrivateContainerd& cd() { return *cd_; }
  const Instance& instance() const { return instance_; }
  const std::string& address() const { return cd_->address(); }

  // A busybox rootfs of its own under the fixture directory.
  std::string Rootfs(std::string_view name = "rootfs") {
    absl::StatusOr<std::string> r = cd_->MakeBusyboxRootfs(name);
    REQUIRE_OK(r);
    return *r;
  }
  std::string Bundle(const std::string& ns, const std::string& id) const {
    return fmt::format("{}/io.containerd.runtime.v2.task/{}/{}", cd_->state(), ns, id);
  }
  std::string ShimLog() const {
    absl::StatusOr<std::string> s = test_support::ReadFile(instance_.log);
    return s.ok() ? *s : std::string("(no shim log at " + instance_.log + ")");
  }

 protected:
  explicit ShimFixture(std::unique_ptr<PrivateContainerd> cd)
      : cd_(std::move(cd)), instance_(InstanceFor(cd_->address())) {}
  ~ShimFixture() = default;

  // Copies containerd.log and shim.log to `dir`; `who` prefixes the message.
  void SaveCaseLogs(const std::string& dir, std::string_view who) {
    if (!test_support::MakeDirs(dir).ok()) return;
    (void)test_support::WriteFile(dir + "/containerd.log", cd_ ? cd_->Log() : "");
    (void)test_support::WriteFile(dir + "/shim.log", ShimLog());
    fmt::print(stderr, "{}: logs of the failed case kept in {}\n", who, dir);
  }

  // If containerd runs: kills and deletes every task and container through
  // ctr (`tasks rm` and `containers rm` with `rm_timeout`), so that the shim
  // gets its Shutdowns and leaves by itself, and waits up to 10 s for the
  // processes behind `shim_pidfds` (opened by the caller before anything was
  // deleted) to exit. Then stops containerd and removes what a killed shim
  // left behind. `who` prefixes the messages. No-op once done.
  void TeardownContainerd(std::vector<base::UniqueFd> shim_pidfds,
                          Clock::duration rm_timeout, std::string_view who) {
    if (!cd_) return;
    std::vector<std::string> namespaces;
    if (cd_->running()) {
      auto lines = [&](std::vector<std::string> args) {
        absl::StatusOr<Result> r = cd_->Ctr(std::move(args), 30s);
        return r.ok() && r->exit_code == 0 ? test_support::SplitLines(r->out)
                                           : std::vector<std::string>{};
      };
      namespaces = lines({"namespaces", "ls", "-q"});
      for (const std::string& ns : namespaces) {
        std::vector<std::string> tasks = lines({"-n", ns, "tasks", "ls", "-q"});
        for (const std::string& id : tasks)
          (void)cd_->Ctr({"-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id}, 30s);
        if (!tasks.empty()) {
          std::vector<std::string> args = {"-n", ns, "tasks", "rm", "-f"};
          args.insert(args.end(), tasks.begin(), tasks.end());
          (void)cd_->Ctr(args, rm_timeout);
        }
        std::vector<std::string> containers = lines({"-n", ns, "containers", "ls", "-q"});
        if (!containers.empty()) {
          std::vector<std::string> args = {"-n", ns, "containers", "rm"};
          args.insert(args.end(), containers.begin(), containers.end());
          (void)cd_->Ctr(args, rm_timeout);
        }
      }
      Deadline deadline = DeadlineIn(10s);
      for (const base::UniqueFd& fd : shim_pidfds) {
        if (fd && !WaitExited(fd, deadline))
          fmt::print(stderr, "{} teardown: a shim process did not exit by itself\n", who);
      }
    }
    absl::Status st = cd_->Shutdown();
    if (!st.ok()) fmt::print(stderr, "{} teardown: {}\n", who, st.ToString());
    cd_.reset();
    for (const std::string& ns : namespaces) test_support::RemoveRuncNamespaceRoot(ns);
    for (const std::string& leftover : {instance_.dir, instance_.pins}) {
      if (PathExists(leftover)) {
        if (absl::Status s = test_support::RemoveTree(leftover); !s.ok())
          fmt::print(stderr, "{} teardown: removing {}: {}\n", who, leftover, s.ToString());
      }
    }
  }

  std::unique_ptr<PrivateContainerd> cd_;
  Instance instance_;
};

}  // namespace shim_test
