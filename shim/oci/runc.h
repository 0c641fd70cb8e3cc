// Runc: the OCI runtime's command line (runc, crun, ...), driven the way
// containerd's runc-v2 shim drives it (see docs/shim-v2-contract.md §6).
//
// Every call blocks until the runtime exits (or the timeout kills it), so the
// shim runs them on worker threads, never on its event loop. A Runc holds only
// its configuration: calls from several threads at once are safe.
//
// Each call runs
//   <binary> [--root <root>] [--log <log_path> --log-format json]
//            [--systemd-cgroup] <command> ...
// with only fds 0, 1, 2 inherited, all signals at their default disposition
// and unblocked, and NOTIFY_SOCKET removed from the environment. The runtime
// gets no parent-death signal: it must finish its work even if the shim dies.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

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
  // A runtime still running after this is SIGKILLed (DeadlineExceeded).
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

// Become fds 0, 1, 2 of the runtime, and through `create` of the container's
// init. An invalid fd means /dev/null.
struct ChildStdio {
  base::UniqueFd in, out, err;
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

  // create --bundle B --pid-file P [--no-pivot] [--no-new-keyring] ID
  // (no --detach, like runc-v2). `stdio` is consumed: the runtime and the
  // container's init get it as fds 0, 1, 2; this call closes its copies when
  // it returns. The runtime's error message comes from log_path only, since
  // its stderr is the container's.
  absl::Status Create(const std::string& id, const std::string& bundle,
                      const std::string& pid_file, ChildStdio stdio, bool no_pivot = false,
                      bool no_new_keyring = false) const;
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

 private:
  // Runs `<binary> <global flags> <args...>`; returns its stdout. With
  // `stdio` the runtime gets those fds (create); otherwise stdin is /dev/null
  // and stdout/stderr are captured.
  absl::StatusOr<std::string> Run(std::string_view command, const std::vector<std::string>& args,
                                  ChildStdio* stdio) const;

  RuncConfig config_;
};

// Reads a --pid-file: a decimal pid, surrounding whitespace allowed.
absl::StatusOr<pid_t> ReadPidFile(const std::string& path);

// --- pure helpers, exposed for tests ---

// Parses `ps --format json` output: a JSON array of ints, or null (= none).
absl::StatusOr<std::vector<pid_t>> ParsePsJson(std::string_view json);

// The "msg" of the last entry whose "level" is error (or fatal/panic) in
// JSON-lines log text, e.g. runc's --log-format json. "" when there is none.
std::string LastLogError(std::string_view log_text);

// The status for a runtime failure: `<prefix>: <message>`, NotFound when the
// message says the container or process is gone, else Unknown.
absl::Status RuntimeError(std::string_view prefix, std::string_view message);

}  // namespace shim::oci
