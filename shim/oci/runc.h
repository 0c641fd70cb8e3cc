// Runc: the OCI runtime's command line (runc, crun, ...), driven the way
// containerd's runc-v2 shim drives it (containerd 1.6's pkg/process/init.go
// NewRunc, and the go-runc v1.0.0 runc.go it vendors).
//
// Every call blocks until the runtime exits (or the timeout kills it), so the
// shim runs them on worker threads, never on its event loop. A Runc holds only
// its configuration: calls from several threads at once are safe.
//
// Each call runs
//   <binary> [--root <root>] [--log <log_path> --log-format json]
//            [--systemd-cgroup] [--criu <criu>] <command> ...
// with only fds 0, 1, 2 inherited, all signals at their default disposition
// and unblocked, and NOTIFY_SOCKET removed from the environment. The runtime
// gets no parent-death signal: it must finish its work even if the shim dies.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "shim/oci/runc_output.h"  // ReadPidFile, ParsePsJson, ...

namespace shim::oci {

struct RuncConfig {
  // Options.binary_name, e.g. "crun". A name without '/' is looked up in
  // PATH. "" = "runc" (an unset binary_name).
  std::string binary = "runc";
  // --root, already including /<namespace>. "" = no --root (runtime default).
  std::string root;
  // --log: <bundle>/log.json. Errors are read back from it. "" = no --log
  // (the runtime then logs to its stderr only).
  std::string log_path;
  bool systemd_cgroup = false;
  // --criu: the criu binary for checkpoint and restore. "" = the runtime's
  // default ("criu" in PATH).
  std::string criu;
  // A runtime still running after this is SIGKILLed (DeadlineExceeded).
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

// Become fds 0, 1, 2 of the runtime, and through it of the container's
// init (create) or of the exec'd process (exec). An invalid fd means
// /dev/null.
struct ChildStdio {
  base::UniqueFd in, out, err;
};

struct CreateOptions {
  // --pid-file: where the runtime writes the init's pid (<bundle>/init.pid).
  std::string pid_file;
  // --console-socket: the init gets a terminal, whose master the runtime
  // sends over this socket (see console.h). "" = no terminal.
  std::string console_socket;
  bool no_pivot = false;
  bool no_new_keyring = false;
  // See SpawnHook (below); empty = none. The shim names the runtime in a
  // file with it, so that a server that dies meanwhile is followed by one
  // that waits for this runtime rather than runs a second one.
  std::function<absl::Status(pid_t runtime_pid)> on_spawned;
};

// Called with the pid of the runtime process once it exists and before it
// execs the runtime binary: nothing the runtime forks can escape what the
// hook sets up (e.g. tracking the runtime as a spawner in the exit monitor,
// so that the exit of an exec'd process that ends at once is not lost). An
// error aborts the call: the runtime process is killed and reaped unrun, and
// the call returns that error. Runs on the calling thread; its time counts
// against RuncConfig::timeout.
using SpawnHook = std::function<absl::Status(pid_t runtime_pid)>;

struct ExecOptions {
  // The OCI Process as JSON (ExecProcessRequest.spec's value), passed to the
  // runtime byte for byte in a temporary runc-process* file.
  std::string process_json;
  // --pid-file: where the runtime writes the exec'd process's pid
  // (<bundle>/<exec-id>.pid).
  std::string pid_file;
  // --console-socket: the process gets a terminal, whose master the runtime
  // sends over this socket (see console.h). "" = no terminal.
  std::string console_socket;
  // See SpawnHook; empty = none.
  SpawnHook on_spawned;
};

// CRIU's settings that checkpoint and restore share (runc's flag names).
struct CriuOptions {
  std::string image_path;   // --image-path: the images (required)
  std::string work_path;    // --work-path: CRIU's work files and its log; "" = image_path
  std::string parent_path;  // --parent-path: a pre-dump's images
  bool tcp_established = false;  // --tcp-established
  bool ext_unix_sk = false;      // --ext-unix-sk
  bool shell_job = false;        // --shell-job: a terminal
  bool file_locks = false;       // --file-locks
  std::vector<std::string> empty_namespaces;  // --empty-ns, each
  std::string manage_cgroups_mode;            // --manage-cgroups-mode soft|full|strict
};

struct CheckpointOptions {
  CriuOptions criu;
  bool leave_running = false;  // --leave-running; else the container stops
};

struct RestoreOptions {
  CriuOptions criu;
  // --pid-file: where the runtime writes the restored init's pid.
  std::string pid_file;
  // --console-socket, as for Create.
  std::string console_socket;
  bool no_pivot = false;
  // See SpawnHook; empty = none. Given the hook, the processes CRIU forks
  // can be tracked from birth (restore runs --detach: nothing waits for
  // `start`).
  SpawnHook on_spawned;
};

// Errors carry the runtime's own message, prefixed with the command
// ("runc kill: container not running"):
//   NotFound            the container or process is gone ("does not exist",
//                       "not running", "no such process", ...); containerd
//                       treats NotFound from Kill as "already exited"
//   FailedPrecondition  the binary is not in PATH
//   DeadlineExceeded    the runtime ran past the timeout and was killed
//   Unknown             anything else the runtime reported
class Runc {
 public:
  explicit Runc(RuncConfig config);

  const RuncConfig& config() const { return config_; }

  // create --bundle B --pid-file P [--console-socket S] [--no-pivot]
  // [--no-new-keyring] ID (no --detach, like runc-v2). `stdio` is consumed:
  // the runtime and the container's init get it as fds 0, 1, 2; this call
  // closes its copies when it returns. With a terminal, pass an empty
  // ChildStdio (the runtime gets /dev/null; the init gets the pty). The
  // runtime's error message comes from log_path only, since its stderr is the
  // container's.
  absl::Status Create(const std::string& id, const std::string& bundle,
                      const CreateOptions& options, ChildStdio stdio) const;
  // The same without a terminal.
  absl::Status Create(const std::string& id, const std::string& bundle,
                      const std::string& pid_file, ChildStdio stdio, bool no_pivot = false,
                      bool no_new_keyring = false) const;
  // exec --process <tmp file> [--console-socket S] --detach --pid-file P ID:
  // starts options.process_json in the running container and returns once it
  // runs (its pid is then in the pid file). `stdio` as for Create: the
  // runtime and the exec'd process get it as fds 0, 1, 2. The process file
  // is removed before this returns. With on_spawned, and only then, the
  // runtime is started with fork() rather than vfork() (which suspends the
  // caller until the exec), so that the hook can run in between.
  absl::Status Exec(const std::string& id, const ExecOptions& options, ChildStdio stdio) const;
  // start ID
  absl::Status Start(const std::string& id) const;
  // kill [--all] ID SIGNUM
  absl::Status Kill(const std::string& id, int signal, bool all) const;
  // delete [--force] ID
  absl::Status Delete(const std::string& id, bool force) const;
  // pause ID / resume ID: freeze or thaw every process of the container.
  absl::Status Pause(const std::string& id) const;
  absl::Status Resume(const std::string& id) const;
  // ps --format json ID: the pids in the container.
  absl::StatusOr<std::vector<pid_t>> Ps(const std::string& id) const;
  // checkpoint --image-path I --work-path W [--parent-path P] [--leave-running]
  // [--tcp-established] [--ext-unix-sk] [--shell-job] [--file-locks]
  // [--manage-cgroups-mode M] [--empty-ns NS]... ID. A CRIU failure is
  // FailedPrecondition whose message has CRIU's own errors from its log
  // (CriuFailure), so "criu cannot run on this kernel" reads as such.
  absl::Status Checkpoint(const std::string& id, const CheckpointOptions& options) const;
  // restore --bundle B --detach --no-subreaper --pid-file P [--console-socket S]
  // [--no-pivot] <CRIU flags as for checkpoint> ID: the container's processes
  // run again from the images, and this returns once they do. `stdio` as for
  // Create. CRIU failures as for Checkpoint.
  absl::Status Restore(const std::string& id, const std::string& bundle,
                       const RestoreOptions& options, ChildStdio stdio) const;
  // update --resources - ID, with `resources_json` (an OCI LinuxResources,
  // as containerd sent it) on the runtime's stdin.
  absl::Status Update(const std::string& id, std::string_view resources_json) const;
  // features: the runtime's Features structure (OCI runtime-spec
  // features.md), its JSON as printed.
  absl::StatusOr<std::string> Features() const;

 private:
  // Runs `<binary> <global flags> <args...>`; returns its stdout. With
  // `stdio` the runtime gets those fds (create); otherwise stdin is /dev/null
  // and stdout/stderr are captured.
  // `on_spawned`, if not null, runs as SpawnHook says. Without `stdio`,
  // `input` (if any) is the runtime's stdin instead of /dev/null.
  absl::StatusOr<std::string> Run(std::string_view command, const std::vector<std::string>& args,
                                  ChildStdio* stdio, const SpawnHook* on_spawned = nullptr,
                                  std::string_view input = {}) const;

  RuncConfig config_;
};

// Where temporary files for the runtime go (exec's process file, console
// sockets): $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp, as in runc-v2.
std::string RuntimeTempDir();

}  // namespace shim::oci
