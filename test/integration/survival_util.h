// Helpers for the survival tests of containerd-shim-embed-v1 (survival_test.cc,
// survival_keeper_test.cc): the shim is two processes, and these tests kill
// them, stop them, restart containerd around them, and watch from outside.
//
//   keeper  exe = <shim dir>/containerd-shim-embed-v1-keeper,
//           argv = keeper SOCKET LOG -- SERVER_ARGV...   (keeper/keeper_main.cc)
//   server  exe = <shim dir>/containerd-shim-embed-v1,
//           argv contains `serve` and `-address <containerd socket>`
//
// Where the instance keeps its things is computed from the documented
// contract (shim/store/paths.h) in shim_test_util.h, which also holds what these
// tests share with the end-to-end tests (/proc and pidfd helpers, ctr
// helpers, the fixture's base and its teardown).
//
// Survival wraps a PrivateContainerd for one test case. On a failed case it
// first copies containerd.log and shim.log to $SURVIVAL_LOG_DIR (default
// /tmp/survival-logs/<case>-<pid>), then lets any stopped keeper continue,
// deletes every task and container, waits for the shim to leave by itself,
// stops containerd, and removes whatever a killed shim left behind.
//
// Nothing here sleeps for a fixed time: waits are on pidfds (process exits)
// or inotify (log lines), each with a deadline.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
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
#include "test/integration/shim_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace survival {

using namespace shim_test;

inline constexpr char kLauncherName[] = "containerd-shim-embed-v1";  // what containerd runs
inline constexpr char kServerName[] = "containerd-shim-embed-v1-server";
inline constexpr char kKeeperName[] = "containerd-shim-embed-v1-keeper";

// The tail of a text, for INFO messages.
inline std::string Tail(const std::string& s, size_t n = 6000) {
  return s.size() > n ? "..." + s.substr(s.size() - n) : s;
}

// ---------------------------------------------------------------------------
// Processes.

inline std::string Canonical(const std::string& path) {
  std::error_code ec;
  std::string c = std::filesystem::weakly_canonical(path, ec).string();
  return ec ? path : c;
}

// The inode of the file a process runs (stat through /proc/<pid>/exe), 0 if gone.
inline ino_t ExeInode(pid_t pid) {
  struct stat st;
  if (stat(fmt::format("/proc/{}/exe", pid).c_str(), &st) != 0) return 0;
  return st.st_ino;
}

// Live (not zombie) server processes of our shim serving `containerd_address`.
inline std::vector<pid_t> Servers(const std::string& containerd_address,
                                  const std::string& shim_dir) {
  const std::string binary = Canonical(shim_dir + "/" + kServerName);
  std::vector<pid_t> out;
  for (pid_t pid : AllPids()) {
    std::optional<std::string> exe = ExePath(pid);
    if (!exe || *exe != binary) continue;
    bool serve = false, address = false;
    for (const std::string& a : Cmdline(pid)) {
      if (a == "serve") serve = true;
      if (a == containerd_address || a == "-address=" + containerd_address) address = true;
    }
    if (serve && address) out.push_back(pid);
  }
  return out;
}

// Live keeper processes of the instance in `instance_dir`.
inline std::vector<pid_t> Keepers(const std::string& instance_dir, const std::string& shim_dir) {
  const std::string binary = Canonical(shim_dir + "/" + kKeeperName);
  std::vector<pid_t> out;
  for (pid_t pid : AllPids()) {
    std::optional<std::string> exe = ExePath(pid);
    if (!exe || *exe != binary) continue;
    std::vector<std::string> args = Cmdline(pid);
    if (args.size() >= 3 && args[1].starts_with(instance_dir + "/")) out.push_back(pid);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Waiting for text in a growing file (the shim's log, a capture file).

// Calls `found(text_after_offset)` each time the file grows, until it
// returns true or the deadline passes. inotify on the directory, so a file
// that does not exist yet (or is replaced) is fine.
template <class Pred>
absl::Status WaitForFileText(const std::string& path, size_t offset, Deadline deadline,
                             Pred found) {
  base::UniqueFd in(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return absl::InternalError("inotify_init1");
  std::string dir = std::filesystem::path(path).parent_path().string();
  inotify_add_watch(in.get(), dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO);
  for (;;) {
    absl::StatusOr<std::string> text = test_support::ReadFile(path);
    if (text.ok() && text->size() >= offset && found(std::string_view(*text).substr(offset)))
      return absl::OkStatus();
    if (Clock::now() >= deadline)
      return absl::DeadlineExceededError(
          fmt::format("{}: not there by the deadline; after byte {}:\n{}", path, offset,
                      text.ok() && text->size() >= offset ? Tail(text->substr(offset))
                                                          : std::string("(unreadable)")));
    pollfd p{in.get(), POLLIN, 0};
    // Capped: a watch on a directory that was recreated would stay silent.
    int r = poll(&p, 1, std::min(MillisUntil(deadline), 500));
    if (r > 0) {
      char buf[4096];
      while (read(in.get(), buf, sizeof buf) > 0) {
      }
    }
  }
}

inline size_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

// "... pid=123 ..." of one shim log line; 0 if none.
inline pid_t LinePid(std::string_view line) {
  size_t at = line.find(" pid=");
  if (at == std::string_view::npos) return 0;
  return static_cast<pid_t>(std::strtol(std::string(line.substr(at + 5, 12)).c_str(), nullptr, 10));
}

// Waits for a "serving for containerd" line in the shim's log after byte
// `offset` from a pid other than `old_server`, and returns that pid.
inline absl::StatusOr<pid_t> WaitServing(const std::string& log, size_t offset,
                                         pid_t old_server, Deadline deadline) {
  pid_t got = 0;
  absl::Status st = WaitForFileText(log, offset, deadline, [&](std::string_view text) {
    for (const std::string& line : test_support::SplitLines(text)) {
      if (!Contains(line, "serving for containerd")) continue;
      pid_t p = LinePid(line);
      if (p > 0 && p != old_server) got = p;
    }
    return got != 0;
  });
  if (!st.ok()) return st;
  return got;
}

// "in 7.7 ms" of every "serving for containerd" line after `offset`.
inline std::vector<double> ServingTimesMs(const std::string& log, size_t offset) {
  std::vector<double> out;
  absl::StatusOr<std::string> text = test_support::ReadFile(log);
  if (!text.ok() || text->size() < offset) return out;
  for (const std::string& line : test_support::SplitLines(text->substr(offset))) {
    size_t at = line.find("serving for containerd");
    if (at == std::string::npos) continue;
    size_t in = line.find(" in ", at);
    if (in != std::string::npos) out.push_back(std::strtod(line.c_str() + in + 4, nullptr));
  }
  return out;
}

// Seconds since the epoch of a shim log line's leading timestamp
// ("2026-11-24T03:52:18.422316Z ..."); -1 if it has none.
inline double LineTime(std::string_view line) {
  std::tm t{};
  int usec = 0;
  if (sscanf(std::string(line.substr(0, 27)).c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &t.tm_year,
             &t.tm_mon, &t.tm_mday, &t.tm_hour, &t.tm_min, &t.tm_sec, &usec) != 7)
    return -1;
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<double>(timegm(&t)) + usec / 1e6;
}

// For each server death in the shim's log after `offset`: milliseconds from
// the keeper's "server exited" to its next "server pid N started".
inline std::vector<double> KeeperRestartGapsMs(const std::string& log, size_t offset) {
  std::vector<double> out;
  absl::StatusOr<std::string> text = test_support::ReadFile(log);
  if (!text.ok() || text->size() < offset) return out;
  double exited = -1;
  for (const std::string& line : test_support::SplitLines(text->substr(offset))) {
    if (Contains(line, "keeper: server exited")) exited = LineTime(line);
    if (Contains(line, "keeper: server pid") && Contains(line, "started") && exited >= 0) {
      out.push_back((LineTime(line) - exited) * 1000);
      exited = -1;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// ctr.

// `ctr task rm ID` (must succeed) and the exit status containerd got back
// in the DeleteResponse: ctr 1.6 exits 0 and only logs
// "task ID exit with non-zero exit code N" for a status N != 0.
inline int RemoveTaskStatus(PrivateContainerd& cd, const std::string& ns, const std::string& id) {
  absl::StatusOr<Result> r = cd.Ctr({"-n", ns, "tasks", "rm", id});
  REQUIRE_OK(r);
  INFO(*r);
  REQUIRE(r->exit_code == 0);
  constexpr std::string_view kText = "exit with non-zero exit code ";
  size_t at = r->err.find(kText);
  if (at == std::string::npos) return 0;
  return std::atoi(r->err.c_str() + at + kText.size());
}

// Polls `ctr task ls` (each call is a full round trip through containerd and
// the shim, not a sleep) until `pred(tasks)` holds or the deadline passes.
template <class Pred>
std::map<std::string, Task> WaitTasks(PrivateContainerd& cd, const std::string& ns,
                                      Deadline deadline, Pred pred) {
  std::map<std::string, Task> tasks;
  for (;;) {
    absl::StatusOr<Result> r = cd.Ctr({"-n", ns, "tasks", "ls"}, 30s);
    if (r.ok() && r->exit_code == 0) {
      tasks = ParseTasks(r->out);
      if (pred(tasks)) return tasks;
    }
    if (Clock::now() >= deadline) return tasks;
  }
}

// `ctr events`, running from construction to destruction. Events of every
// namespace; one line each: "<time> <namespace> <topic> <json>".
class EventLog {
 public:
  explicit EventLog(PrivateContainerd& cd) : cd_(cd) {
    absl::StatusOr<Subprocess> p = cd.RunCtrAsync({"events"});
    REQUIRE_OK(p);
    proc_ = std::move(*p);
    // Subscribed once an event we cause shows up. An event caused before
    // the subscription took hold is never shown, so probe again (a new
    // name each time) until one is, within the same 30 s.
    const Deadline subscribed_by = DeadlineIn(30s);
    absl::Status seen = absl::DeadlineExceededError("no probe event seen");
    while (!seen.ok() && Clock::now() < subscribed_by) {
      const std::string probe = UniqueName("evprobe");
      absl::StatusOr<Result> r = cd.Ctr({"namespaces", "create", probe});
      REQUIRE_OK(r);
      REQUIRE(r->exit_code == 0);
      seen = proc_.WaitForOutput(probe, std::min(subscribed_by, DeadlineIn(1s)));
      (void)cd.Ctr({"namespaces", "remove", probe});
    }
    REQUIRE_OK(seen);
  }
  std::string Text() const { return proc_.out(); }

  struct Exit {
    std::string ns;
    std::string container;
    uint32_t status = 0;
    std::string line;
  };
  // Every /tasks/exit seen so far.
  std::vector<Exit> Exits() const {
    std::vector<Exit> out;
    for (const std::string& line : test_support::SplitLines(Text())) {
      if (!Contains(line, " /tasks/exit ")) continue;
      Exit e;
      e.line = line;
      size_t topic = line.find(" /tasks/exit ");
      std::vector<std::string> before = test_support::Split(line.substr(0, topic), ' ');
      if (!before.empty()) e.ns = before.back();
      e.container = JsonString(line, "container_id");
      e.status = static_cast<uint32_t>(JsonNumber(line, "exit_status"));  // omitted when 0
      out.push_back(std::move(e));
    }
    return out;
  }
  std::vector<Exit> ExitsOf(const std::string& container) const {
    std::vector<Exit> out;
    for (Exit& e : Exits()) {
      if (e.container == container) out.push_back(std::move(e));
    }
    return out;
  }
  // Waits until `text` appears in the event stream.
  absl::Status WaitFor(std::string_view text, Deadline deadline) {
    return proc_.WaitForOutput(text, deadline);
  }

 private:
  static std::string JsonString(const std::string& line, std::string_view key) {
    std::string k = fmt::format("\"{}\":\"", key);
    size_t at = line.find(k);
    if (at == std::string::npos) return "";
    size_t end = line.find('"', at + k.size());
    return line.substr(at + k.size(), end - at - k.size());
  }
  static long JsonNumber(const std::string& line, std::string_view key) {
    std::string k = fmt::format("\"{}\":", key);
    size_t at = line.find(k);
    if (at == std::string::npos) return 0;
    return std::strtol(line.c_str() + at + k.size(), nullptr, 10);
  }

  PrivateContainerd& cd_;
  Subprocess proc_;
};

// ---------------------------------------------------------------------------
// The fixture.

class Survival : public ShimFixture {
 public:
  // shim_dir: where containerd finds the shim (and where Servers()/Keepers()
  // expect its binaries); "" = the build's shim/ directory.
  static std::unique_ptr<Survival> Start(std::string shim_dir = "") {
    if (shim_dir.empty()) shim_dir = test_support::DefaultShimDir();
    PrivateContainerdOptions o;
    o.extra_path = std::vector<std::string>{shim_dir};
    UseContainerdUnderTest(o);  // $EMBED_CONTAINERD; Debian's by default
    absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start(o);
    REQUIRE_OK(cd);
    return std::unique_ptr<Survival>(new Survival(std::move(*cd), shim_dir));
  }
  ~Survival() {
    if (CurrentCaseFailed()) SaveLogs();
    Teardown();
  }
  const std::string& shim_dir() const { return shim_dir_; }

  std::vector<pid_t> servers() const { return Servers(cd_->address(), shim_dir_); }
  std::vector<pid_t> keepers() const { return Keepers(instance_.dir, shim_dir_); }

  // The one live server (waits up to `timeout` for it: the keeper may be
  // starting it). REQUIREs exactly one.
  pid_t TheServer(Clock::duration timeout = 20s) const {
    Deadline deadline = DeadlineIn(timeout);
    std::vector<pid_t> s = servers();
    while (s.size() != 1 && Clock::now() < deadline) {
      // A new server is being started (fork+exec): wait for the log to
      // grow (the keeper and the server log as they go), at most 50 ms.
      (void)WaitForFileText(instance_.log, FileSize(instance_.log),
                            std::min(deadline, DeadlineIn(50ms)),
                            [](std::string_view grown) { return !grown.empty(); });
      s = servers();
    }
    INFO("servers of " << cd_->address() << ": " << s.size() << "\nshim log:\n"
                       << Tail(ShimLog(), 3000));
    REQUIRE(s.size() == 1);
    return s[0];
  }
  pid_t TheKeeper() const {
    std::vector<pid_t> k = keepers();
    INFO("keepers of " << instance_.dir << ": " << k.size());
    REQUIRE(k.size() == 1);
    return k[0];
  }

  // The tails of both logs, for INFO; the shim's without its libbpf debug
  // lines (a server logs ~100 of them at every start under -debug).
  std::string Logs() const {
    std::string shim;
    for (const std::string& line : test_support::SplitLines(ShimLog()))
      if (!Contains(line, "libbpf: ")) shim += line + "\n";
    return fmt::format("--- shim.log (tail, no libbpf lines) ---\n{}\n"
                       "--- containerd.log (tail) ---\n{}\n",
                       Tail(shim, 5000), Tail(cd_->Log(), 5000));
  }

  // What containerd's log shows if it ever took our shim for dead; "" if
  // nothing. Two signs:
  // - a TaskExit that containerd made up itself ("event published"; the
  //   shim's own are "event forwarded"): on a lost connection containerd
  //   runs `delete` and publishes TaskExit for a task it still had
  //   (runtime/v2 cleanupAfterDeadShim). After a normal delete the task is
  //   gone from its list first, so this never shows up then;
  // - "shim disconnected" within the first `disconnects_until` bytes of the
  //   log (CdLogSize() taken before the test deletes anything): containerd
  //   logs it for every connection that closes, also after a normal
  //   delete, so only a checkpoint tells the two apart.
  // `deleted` names containers the test itself deleted before the checkpoint.
  std::string ShimDeathSigns(size_t disconnects_until = 0,
                             const std::vector<std::string>& deleted = {}) const {
    std::string out;
    std::string log = cd_->Log();
    size_t pos = 0;
    for (const std::string& line : test_support::SplitLines(log)) {
      pos = log.find(line, pos);
      bool ours = false;
      for (const std::string& id : deleted) ours = ours || Contains(line, " id=" + id);
      if (pos < disconnects_until && !ours && Contains(line, "shim disconnected"))
        out += line + "\n";
      if (Contains(line, "msg=\"event published\"") && Contains(line, "topic=/tasks/exit"))
        out += line + "\n";
    }
    return out;
  }
  size_t CdLogSize() const { return FileSize(cd_->log_path()); }

  // SIGKILLs the server `pid` and waits until it is gone.
  void KillServer(pid_t pid) {
    base::UniqueFd fd = OpenPidfd(pid);
    REQUIRE(fd.valid());
    REQUIRE(SendSignal(fd, SIGKILL));
    REQUIRE(WaitExited(fd, DeadlineIn(10s)));
  }
  // Kills the current server and waits until a new one serves; returns it.
  pid_t KillServerAndWaitServing(Clock::duration timeout = 30s) {
    pid_t old = TheServer();
    // Measured before the kill: any "serving" line after it from another pid
    // is a server started after the kill.
    size_t offset = FileSize(instance_.log);
    KillServer(old);
    absl::StatusOr<pid_t> next = WaitServing(instance_.log, offset, old, DeadlineIn(timeout));
    INFO(Logs());
    REQUIRE_OK(next);
    REQUIRE(*next != old);
    return *next;
  }

  void SaveLogs() { SaveCaseLogs(CaseLogDir("SURVIVAL_LOG_DIR", "/tmp/survival-logs"), "survival"); }

  // Lets stopped keepers go on, deletes all tasks and containers (the shim
  // then leaves by itself), stops containerd, removes what a killed shim
  // left behind.
  void Teardown() {
    if (!cd_) return;
    for (pid_t k : keepers()) kill(k, SIGCONT);
    std::vector<base::UniqueFd> pidfds;
    if (cd_->running()) {
      for (pid_t p : servers()) pidfds.push_back(OpenPidfd(p));
      for (pid_t p : keepers()) pidfds.push_back(OpenPidfd(p));
    }
    TeardownContainerd(std::move(pidfds), 60s, "survival");
  }

 private:
  Survival(std::unique_ptr<PrivateContainerd> cd, std::string shim_dir)
      : ShimFixture(std::move(cd)), shim_dir_(std::move(shim_dir)) {}

  std::string shim_dir_;
};

// Copies the shim's three binaries from `from_dir` into `to_dir`, each
// through a temporary name and a rename: every file gets a new inode, as an
// installed rebuild would, so an upgrade test can replace them under a
// running shim.
inline void InstallShimBinaries(const std::string& from_dir, const std::string& to_dir) {
  for (const char* name : {kLauncherName, kServerName, kKeeperName}) {
    const std::string to = to_dir + "/" + name;
    const std::string tmp = to + ".new";
    std::error_code ec;
    std::filesystem::copy_file(from_dir + "/" + name, tmp,
                               std::filesystem::copy_options::overwrite_existing, ec);
    INFO("copy " << name << " -> " << tmp << ": " << ec.message());
    REQUIRE_FALSE(ec);
    REQUIRE(chmod(tmp.c_str(), 0755) == 0);
    REQUIRE(rename(tmp.c_str(), to.c_str()) == 0);
  }
}

}  // namespace survival
