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
// What these tests share with the survival tests (the shim's instance, /proc
// and pidfd helpers, ctr helpers, the fixture's base and teardown) is in
// shim_test_util.h.
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
#include "test/integration/shim_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"
#include "ttrpc/client.h"

namespace e2e {

using namespace shim_test;

inline constexpr char kTaskService[] = "containerd.task.v2.Task";
inline constexpr char kNamespaceKey[] = "containerd-namespace-ttrpc";

// ---------------------------------------------------------------------------
// The shim's binary.

// What containerd runs (it hands all but the common `start` to the server).
inline std::string ShimBinary() {
  return test_support::DefaultShimDir() + "/containerd-shim-embed-v1";
}
inline std::string ServerBinary() { return ShimBinary() + "-server"; }

// ---------------------------------------------------------------------------
// Processes.

// The long-lived processes of our shim serving `containerd_address`:
//   servers  executable = containerd-shim-embed-v1-server, the `serve` action
//            and that address on the command line (a transient `start` or
//            `delete` has no `serve`);
//   keepers  containerd-shim-embed-v1-keeper (which holds the sockets and
//            restarts the server) with that address on its command line.
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
  const std::string binary = std::filesystem::weakly_canonical(ServerBinary(), ec).string();
  const std::string keeper = std::filesystem::weakly_canonical(ShimBinary() + "-keeper", ec).string();
  ShimProcesses out;
  for (pid_t pid : AllPids()) {
    std::optional<std::string> exe = ExePath(pid);
    if (!exe) continue;  // gone, or a zombie
    const bool server_exe = *exe == binary;
    if (!server_exe && *exe != keeper) continue;
    std::vector<std::string> args = Cmdline(pid);
    bool serve = false, address = false;
    for (const std::string& a : args) {
      if (a == "serve") serve = true;
      if (a == containerd_address || a == "unix://" + containerd_address ||
          a == "-address=" + containerd_address || a == "--address=" + containerd_address)
        address = true;
    }
    if (!address) continue;
    if (server_exe && serve) out.servers.push_back(pid);
    if (!server_exe) out.keepers.push_back(pid);
  }
  return out;
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
// Direct calls to our shim's Task service.

inline ttrpc::CallOptions CallIn(const std::string& ns) {
  ttrpc::CallOptions o;
  o.metadata = {{kNamespaceKey, ns}};
  o.timeout = absl::Seconds(10);
  return o;
}

// ---------------------------------------------------------------------------
// The fixture.

class E2E : public ShimFixture {
 public:
  // On the containerd under test ($EMBED_CONTAINERD; Debian's by default).
  static std::unique_ptr<E2E> Start(PrivateContainerdOptions o = {}) {
    UseContainerdUnderTest(o);
    absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start(o);
    REQUIRE_OK(cd);
    std::unique_ptr<E2E> e(new E2E(std::move(*cd)));
    return e;
  }
  ~E2E() {
    if (CurrentCaseFailed()) SaveLogs();
    Teardown();
  }

  // The shim's server processes (see FindShimProcesses).
  std::vector<pid_t> daemons() const { return FindShimProcesses(cd_->address()).servers; }
  ShimProcesses processes() const { return FindShimProcesses(cd_->address()); }

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

  void SaveLogs() { SaveCaseLogs(CaseLogDir("SHIM_E2E_LOG_DIR", "/tmp/shim-e2e-logs"), "shim_e2e"); }

  // Deletes all tasks and containers (so that the shim gets its Shutdowns and
  // leaves on its own), waits for the daemon and its keeper, stops
  // containerd, and removes what a killed daemon left behind.
  void Teardown() {
    if (!cd_) return;
    std::vector<base::UniqueFd> pidfds;
    if (cd_->running()) {
      for (pid_t p : processes().all()) pidfds.push_back(OpenPidfd(p));
    }
    TeardownContainerd(std::move(pidfds), 30s, "shim_e2e");
  }

 private:
  explicit E2E(std::unique_ptr<PrivateContainerd> cd) : ShimFixture(std::move(cd)) {}
};

}  // namespace e2e
