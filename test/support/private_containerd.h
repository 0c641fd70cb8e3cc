// PrivateContainerd: a containerd of our own for one test.
//
//   absl::StatusOr<std::unique_ptr<PrivateContainerd>> cd = PrivateContainerd::Start();
//   REQUIRE(cd.ok());
//   absl::StatusOr<Result> v = (*cd)->Ctr({"version"});
//
// Everything lives in a fresh mkdtemp directory (dir()): config.toml, the
// gRPC and ttrpc sockets, root/, state/, opt/ and containerd.log (containerd's
// stdout+stderr at debug level). containerd runs as `tini -s -p SIGTERM --
// containerd --config dir()/config.toml`; the test process also becomes a
// child subreaper, so orphans (shims) end up reaped by tini or by us rather
// than by a lazy PID 1. containerd's PATH is Options::extra_path + the usual
// PATH, so it finds our containerd-shim-embed-v1 in the build's shim/ dir.
//
// Teardown (Shutdown(), also run by the destructor, even after a failed
// REQUIRE): in every namespace SIGKILL and force-delete all tasks, delete all
// containers; stop containerd (SIGTERM, SIGKILL after stop_timeout); SIGKILL
// any process still referencing dir() (cmdline, cwd, root or exe) and its
// descendants; reap orphans; lazily unmount everything under dir(), deepest
// first; remove dir() without crossing filesystems.
//
// A test that dies without running its destructors (SIGKILL, a meson
// timeout) leaves its directory behind: Start() first sweeps directories of
// earlier fixtures whose owner process (dir()/owner: pid and start time) is
// gone, killing what still references them and unmounting what is below.
//
// Put container root filesystems under dir() (MakeBusyboxRootfs) so that
// teardown covers them too. Use UniqueName() for container ids.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "test/support/fs_util.h"
#include "test/support/subprocess.h"

namespace test_support {

// The directory holding our shim binary: $EMBED_SHIM_DIR if set, else the
// build tree's shim/ directory (compiled in by test/support/meson.build).
std::string DefaultShimDir();

// Removes <base_dir>/embed-ctrd-* directories left by fixtures whose process
// died (see above). Returns how many were removed. Start() calls it.
int SweepStaleContainerdDirs(const std::string& base_dir = "/tmp");

struct PrivateContainerdOptions {
  // Put in front of containerd's PATH. nullopt = {DefaultShimDir()}.
  std::optional<std::vector<std::string>> extra_path;
  std::string containerd = "containerd";
  // The ctr that Ctr() and RunCtrAsync() run (a peer's own ctr for a peer containerd).
  std::string ctr = "ctr";
  // The subreaper containerd runs under; empty = run containerd directly.
  std::string tini = "tini";
  // TOML appended verbatim to the generated config.toml.
  std::string extra_config;
  // The config's `version`: 2 for containerd 1.6 and 1.7, 3 for 2.x (whose
  // CRI plugins have other ids, and whose NRI socket is host-wide).
  int config_version = 2;
  // Leave the CRI plugins (and on 2.x NRI) disabled: ctr needs neither.
  bool disable_cri = true;
  std::string log_level = "debug";
  Clock::duration start_timeout = std::chrono::seconds(30);
  Clock::duration stop_timeout = std::chrono::seconds(15);
  // Parent of the temporary directory (keep it short: socket paths <= 107).
  std::string base_dir = "/tmp";
};

class PrivateContainerd {
 public:
  // Creates the directory and config, starts containerd and waits until both
  // its gRPC and ttrpc sockets accept connections. On failure everything is
  // cleaned up and the error carries the tail of containerd's log.
  static absl::StatusOr<std::unique_ptr<PrivateContainerd>> Start(
      PrivateContainerdOptions options = {});
  ~PrivateContainerd();  // Shutdown(); problems go to stderr
  PrivateContainerd(const PrivateContainerd&) = delete;
  PrivateContainerd& operator=(const PrivateContainerd&) = delete;

  // The full teardown described above. Idempotent; returns the first problem.
  absl::Status Shutdown();

  const std::string& dir() const { return dir_; }
  const std::string& address() const { return address_; }  // gRPC socket path
  std::string ttrpc_address() const { return address_ + ".ttrpc"; }
  std::string root() const { return dir_ + "/root"; }
  std::string state() const { return dir_ + "/state"; }
  std::string log_path() const { return dir_ + "/containerd.log"; }
  std::string config_path() const { return dir_ + "/config.toml"; }
  // The PATH containerd runs with.
  const std::string& path_env() const { return path_env_; }

  // containerd's pid (0 when not running).
  pid_t containerd_pid() const;
  bool running() const { return daemon_.has_value() && daemon_->running(); }

  // containerd's log (stdout + stderr).
  std::string Log() const;
  bool LogContains(std::string_view text) const;
  // Waits (inotify on the log file) until the log contains `text`.
  absl::Status WaitForLog(std::string_view text, Clock::duration timeout);

  // Runs `ctr --address <address()> <args...>` and waits for it. Pick a
  // namespace with {"-n", ns, ...}; the default one is "default"
  // (CONTAINERD_NAMESPACE is removed from ctr's environment). ctr 2.x's
  // leading cgroup v1 deprecation warning is dropped from its stderr.
  absl::StatusOr<Result> Ctr(std::vector<std::string> args,
                             Clock::duration timeout = std::chrono::seconds(60));
  // Starts ctr without waiting (e.g. a foreground `ctr run`). options.argv is
  // replaced; everything else (stdin, output, env) is honoured.
  absl::StatusOr<Subprocess> RunCtrAsync(std::vector<std::string> args,
                                         SpawnOptions options = {}) const;
  // The full ctr command line for `args`.
  std::vector<std::string> CtrArgv(std::vector<std::string> args) const;

  // Builds a busybox rootfs at dir()/<name> and returns its path.
  absl::StatusOr<std::string> MakeBusyboxRootfs(std::string_view name = "rootfs");

  // Stops only the daemon (tasks and shims keep running): `sig` to
  // containerd, SIGKILL after stop_timeout.
  absl::Status StopDaemon(int sig = SIGTERM);
  // Starts the daemon again with the same config and waits until ready.
  absl::Status StartDaemon();
  absl::Status Restart(int sig = SIGTERM);

 private:
  explicit PrivateContainerd(PrivateContainerdOptions options);
  absl::Status WaitReady(Deadline deadline);
  absl::Status CleanupContainers();
  std::string LogTail(size_t bytes = 4000) const;

  PrivateContainerdOptions options_;
  ScopedTempDir temp_;
  std::string dir_;
  std::string address_;
  std::string path_env_;
  std::optional<Subprocess> daemon_;
  bool shut_down_ = false;
};

// runc and crun leave their (empty) per-namespace root,
// /run/containerd/runc/<ns>, and the namespace's cgroup /<ns> (ctr's default
// cgroupsPath is /<ns>/<id>) behind, as they do under runc-v2. Tests use
// namespaces of their own and remove both (when empty) when they are done.
void RemoveRuncNamespaceRoot(const std::string& ns);

}  // namespace test_support
