// Helpers for the end-to-end tests of containerd-shim-embed-v1 on a stock
// containerd 1.6 (shim_e2e_test.cc, shim_e2e_io_test.cc).
//
// E2E wraps a PrivateContainerd for one test case. Its destructor first keeps
// copies of containerd.log and the shim's log when the case failed (in
// $SHIM_E2E_LOG_DIR, default /tmp/shim-e2e-logs/<case>), then deletes every
// task and container through ctr, waits for our shim daemon to leave by
// itself (it lingers ~1 s after its last container), and only then lets the
// fixture stop containerd. Whatever a killed daemon left behind (instance
// directory, bpffs pins) is removed, so no test leaks into the next.
//
// Where the shim keeps its things is computed here from the documented
// contract (shim/paths.h), not taken from the shim: /run/containerd-embed
// (or $EMBED_SHIM_RUN_DIR) / <16 hex digits of FNV-1a(containerd socket path)>,
// with shim.sock, shim.log and state/<ns>/<id>.json, and the pins in
// /sys/fs/bpf/containerd-embed/<instance>.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "shim.pb.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"
#include "ttrpc/client.h"

namespace e2e {

using namespace std::chrono_literals;
using test_support::Clock;
using test_support::Deadline;
using test_support::DeadlineIn;
using test_support::PrivateContainerd;
using test_support::Result;
using test_support::SpawnOptions;
using test_support::Subprocess;
using test_support::UniqueName;

inline constexpr char kRuntime[] = "io.containerd.embed.v1";
inline constexpr char kTaskService[] = "containerd.task.v2.Task";
inline constexpr char kNamespaceKey[] = "containerd-namespace-ttrpc";

inline bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

inline bool PathExists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

// ---------------------------------------------------------------------------
// Failure tracking: E2E keeps the logs of failed cases only.

inline bool& CurrentCaseFailed() {
  static bool failed = false;
  return failed;
}

// Set by the Catch listener registered in shim_e2e_test.cc
// (FailureListener needs CATCH_CONFIG_EXTERNAL_INTERFACES before catch.hpp).

// ---------------------------------------------------------------------------
// The shim's instance, from the contract in shim/paths.h.

struct Instance {
  std::string name;    // 16 hex digits
  std::string dir;     // <run>/<name>
  std::string socket;  // <dir>/shim.sock
  std::string log;     // <dir>/shim.log
  std::string state;   // <dir>/state
  std::string pins;    // /sys/fs/bpf/containerd-embed/<name>
  std::string Record(const std::string& ns, const std::string& id) const {
    return fmt::format("{}/{}/{}.json", state, ns, id);
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

inline std::string ShimBinary() {
  return test_support::DefaultShimDir() + "/containerd-shim-embed-v1";
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

// The long-lived processes of our shim serving `containerd_address`:
//   servers  executable = our binary, the `serve` action and that address on
//            the command line (a transient `start` or `delete` has no `serve`);
//   keepers  another executable of ours (containerd-shim-embed-v1-keeper,
//            which holds the sockets and restarts the server) whose command
//            line has that address.
// Not a host-wide grep: other tests' shims serve other addresses.
struct ShimProcesses {
  std::vector<pid_t> servers;
  std::vector<pid_t> keepers;
  size_t size() const { return servers.size() + keepers.size(); }
  bool empty() const { return size() == 0; }
  std::vector<pid_t> all() const {
    std::vector<pid_t> v = servers;
    v.insert(v.end(), keepers.begin(), keepers.end());
    return v;
  }
  std::string ToString() const {
    std::string s = "servers:";
    for (pid_t p : servers) s += fmt::format(" {} ({})", p, CmdlineText(p));
    s += "; keepers:";
    for (pid_t p : keepers) s += fmt::format(" {} ({})", p, CmdlineText(p));
    return s;
  }
};

inline ShimProcesses FindShimProcesses(const std::string& containerd_address) {
  std::error_code ec;
  const std::string binary = std::filesystem::weakly_canonical(ShimBinary(), ec).string();
  const std::string prefix = binary + "-";  // containerd-shim-embed-v1-keeper, ...
  ShimProcesses out;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir("/proc"), &closedir);
  if (!d) return out;
  while (dirent* e = readdir(d.get())) {
    char* end = nullptr;
    long pid = strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    char buf[4096];
    ssize_t n = readlink(fmt::format("/proc/{}/exe", pid).c_str(), buf, sizeof buf - 1);
    if (n <= 0) continue;  // gone, or a zombie
    std::string exe(buf, static_cast<size_t>(n));
    if (exe.ends_with(" (deleted)")) exe.resize(exe.size() - 10);  // rebuilt meanwhile
    const bool server_exe = exe == binary;
    if (!server_exe && !exe.starts_with(prefix)) continue;
    std::vector<std::string> args = Cmdline(static_cast<pid_t>(pid));
    bool serve = false, address = false;
    for (const std::string& a : args) {
      if (a == "serve") serve = true;
      if (a == containerd_address || a == "unix://" + containerd_address ||
          a == "-address=" + containerd_address || a == "--address=" + containerd_address)
        address = true;
    }
    if (!address) continue;
    if (server_exe && serve) out.servers.push_back(static_cast<pid_t>(pid));
    if (!server_exe) out.keepers.push_back(static_cast<pid_t>(pid));
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
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{pidfd.get(), POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (r == 1) return true;
    if (r < 0 && errno == EINTR) continue;
    if (left.count() <= 0 || r == 0) return false;
  }
}

inline bool Alive(pid_t pid) {
  base::UniqueFd fd = OpenPidfd(pid);
  if (!fd) return false;
  pollfd p{fd.get(), POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

inline bool SendSignal(const base::UniqueFd& pidfd, int sig) {
  return syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0) == 0;
}

// "Rss:" / "Pss:" from /proc/<pid>/smaps_rollup, in kB (-1 if absent).
inline int64_t SmapsRollupKb(pid_t pid, std::string_view key) {
  absl::StatusOr<std::string> text = test_support::ReadFile(fmt::format("/proc/{}/smaps_rollup", pid));
  if (!text.ok()) return -1;
  for (const std::string& line : test_support::SplitLines(*text)) {
    if (line.starts_with(std::string(key) + ":")) {
      std::vector<std::string> f = test_support::Split(line, ' ');
      if (f.size() >= 2) return std::stoll(f[1]);
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------
// ctr.

struct Task {
  std::string id;
  pid_t pid = 0;
  std::string status;
};

// `ctr -n ns task ls`, keyed by task id.
inline std::map<std::string, Task> ListTasks(PrivateContainerd& cd, const std::string& ns) {
  absl::StatusOr<Result> r = cd.Ctr({"-n", ns, "tasks", "ls"});
  REQUIRE_OK(r);
  INFO(*r);
  REQUIRE(r->exit_code == 0);
  std::map<std::string, Task> out;
  for (const std::string& line : test_support::SplitLines(r->out)) {
    std::vector<std::string> f = test_support::Split(line, ' ');
    if (f.size() < 3 || f[0] == "TASK") continue;
    Task t{f[0], static_cast<pid_t>(std::stol(f[1])), f[2]};
    out[t.id] = t;
  }
  return out;
}

inline std::string TasksText(const std::map<std::string, Task>& tasks) {
  std::string s;
  for (const auto& [id, t] : tasks) s += fmt::format("{} {} {}\n", id, t.pid, t.status);
  return s;
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

// A detached container; returns its task pid (from `ctr task ls`).
inline pid_t RunDetached(PrivateContainerd& cd, const std::string& ns, const std::string& rootfs,
                         const std::string& id, std::vector<std::string> cmd,
                         std::vector<std::string> extra_flags = {}) {
  std::vector<std::string> flags = {"-d"};
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  CtrOk(cd, RunArgs(ns, flags, rootfs, id, std::move(cmd)));
  std::map<std::string, Task> tasks = ListTasks(cd, ns);
  INFO(TasksText(tasks));
  REQUIRE(tasks.contains(id));
  REQUIRE(tasks[id].status == "RUNNING");
  REQUIRE(tasks[id].pid > 0);
  return tasks[id].pid;
}

// ---------------------------------------------------------------------------
// Direct calls to our shim's Task service.

inline ttrpc::CallOptions CallIn(const std::string& ns) {
  ttrpc::CallOptions o;
  o.metadata = {{kNamespaceKey, ns}};
  o.timeout = absl::Seconds(10);
  return o;
}

// ---------------------------------------------------------------------------
// The fixture.

inline std::string CaseLogDir() {
  const char* base = std::getenv("SHIM_E2E_LOG_DIR");
  std::string name = Catch::getResultCapture().getCurrentTestName();
  for (char& c : name) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  if (name.size() > 80) name.resize(80);
  return fmt::format("{}/{}-{}", base && *base ? base : "/tmp/shim-e2e-logs", name, getpid());
}

class E2E {
 public:
  static std::unique_ptr<E2E> Start() {
    absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start();
    REQUIRE_OK(cd);
    std::unique_ptr<E2E> e(new E2E(std::move(*cd)));
    return e;
  }
  ~E2E() {
    if (CurrentCaseFailed()) SaveLogs();
    Teardown();
  }
  E2E(const E2E&) = delete;
  E2E& operator=(const E2E&) = delete;

  PrivateContainerd& cd() { return *cd_; }
  const Instance& instance() const { return instance_; }
  const std::string& address() const { return cd_->address(); }
  // The shim's server processes (see FindShimProcesses).
  std::vector<pid_t> daemons() const { return FindShimProcesses(cd_->address()).servers; }
  ShimProcesses processes() const { return FindShimProcesses(cd_->address()); }

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
  // The one shim server serving this containerd (REQUIREs exactly one, and
  // at most one keeper).
  pid_t TheDaemon() const {
    ShimProcesses p = processes();
    INFO("shim processes: " << p.ToString());
    REQUIRE(p.servers.size() == 1);
    REQUIRE(p.keepers.size() <= 1);
    return p.servers[0];
  }

  std::unique_ptr<ttrpc::BlockingClient> ShimClient() const {
    absl::StatusOr<std::unique_ptr<ttrpc::BlockingClient>> c =
        ttrpc::BlockingClient::Connect(instance_.socket);
    REQUIRE_OK(c);
    return std::move(*c);
  }

  void SaveLogs() {
    std::string dir = CaseLogDir();
    if (!test_support::MakeDirs(dir).ok()) return;
    (void)test_support::WriteFile(dir + "/containerd.log", cd_->Log());
    (void)test_support::WriteFile(dir + "/shim.log", ShimLog());
    fmt::print(stderr, "shim_e2e: logs of the failed case kept in {}\n", dir);
  }

  // Deletes all tasks and containers (so that the shim gets its Shutdowns and
  // leaves on its own), waits for the daemon, stops containerd, and removes
  // what a killed daemon left behind.
  void Teardown() {
    if (!cd_) return;
    if (cd_->running()) {
      std::vector<pid_t> before = processes().all();
      std::vector<base::UniqueFd> pidfds;
      for (pid_t p : before) pidfds.push_back(OpenPidfd(p));
      auto lines = [&](std::vector<std::string> args) {
        absl::StatusOr<Result> r = cd_->Ctr(std::move(args), 30s);
        return r.ok() && r->exit_code == 0 ? test_support::SplitLines(r->out)
                                           : std::vector<std::string>{};
      };
      namespaces_ = lines({"namespaces", "ls", "-q"});
      for (const std::string& ns : namespaces_) {
        std::vector<std::string> tasks = lines({"-n", ns, "tasks", "ls", "-q"});
        for (const std::string& id : tasks)
          (void)cd_->Ctr({"-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id}, 30s);
        if (!tasks.empty()) {
          std::vector<std::string> args = {"-n", ns, "tasks", "rm", "-f"};
          args.insert(args.end(), tasks.begin(), tasks.end());
          (void)cd_->Ctr(args, 30s);
        }
        std::vector<std::string> containers = lines({"-n", ns, "containers", "ls", "-q"});
        if (!containers.empty()) {
          std::vector<std::string> args = {"-n", ns, "containers", "rm"};
          args.insert(args.end(), containers.begin(), containers.end());
          (void)cd_->Ctr(args, 30s);
        }
      }
      Deadline deadline = DeadlineIn(10s);
      for (const base::UniqueFd& fd : pidfds) {
        if (fd && !WaitExited(fd, deadline))
          fmt::print(stderr, "shim_e2e teardown: a shim process did not exit by itself\n");
      }
    }
    absl::Status st = cd_->Shutdown();
    if (!st.ok()) fmt::print(stderr, "shim_e2e teardown: {}\n", st.ToString());
    cd_.reset();
    // runc and crun leave their (empty) per-namespace root behind, as they
    // do under runc-v2; the namespaces here are the test's own.
    for (const std::string& ns : namespaces_) {
      if (ns != "default") (void)rmdir(("/run/containerd/runc/" + ns).c_str());
    }
    for (const std::string& leftover : {instance_.dir, instance_.pins}) {
      if (PathExists(leftover)) {
        if (absl::Status s = test_support::RemoveTree(leftover); !s.ok())
          fmt::print(stderr, "shim_e2e teardown: removing {}: {}\n", leftover, s.ToString());
      }
    }
  }

 private:
  explicit E2E(std::unique_ptr<PrivateContainerd> cd)
      : cd_(std::move(cd)), instance_(InstanceFor(cd_->address())) {}

  std::unique_ptr<PrivateContainerd> cd_;
  Instance instance_;
  std::vector<std::string> namespaces_;
};

}  // namespace e2e
