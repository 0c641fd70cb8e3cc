// binary:// loggers, as containerd defines them (runc-v2's NewBinaryIO and
// NewBinaryCmd in containerd's pkg/process): for
//
//   binary:///path/to/logger?key=value&flag
//
// the shim runs `/path/to/logger key value flag ""` (each query key, then
// its first value, in the URI's order) with the environment CONTAINER_ID and
// CONTAINER_NAMESPACE only, stdin/stdout/stderr on /dev/null, and
//   fd 3  the read end of the container's stdout pipe
//   fd 4  the read end of the container's stderr pipe
//   fd 5  the write end of a "ready" pipe: the logger writes a byte to it or
//         closes it once it is ready to read.
// The container gets the write ends. The shim keeps neither: the logger sees
// EOF once the container (and whatever inherited its stdout) is gone, and no
// byte passes through the shim, so a server crash loses none.
//
// The logger is not the shim's child: it is started through an intermediate
// process that exits at once, so it is reparented and reaped as the
// containers are (by the subreaper above the shim, or init), whichever server
// is running then. Its pid and start time go into the container's record; a
// later Delete finds it through a pidfd (StopLogger).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "shim/oci/stdio_uri.h"

namespace shim::oci {

struct LoggerCommand {
  std::string path;               // absolute
  std::vector<std::string> args;  // after argv[0] (= path)
};

// The command a binary:// URI names; InvalidArgument without an absolute path.
absl::StatusOr<LoggerCommand> LoggerCommandOf(const StdioUri& uri);

struct LoggerOptions {
  std::string ns, id;  // CONTAINER_NAMESPACE, CONTAINER_ID
  // RuntimeOptions io_uid/io_gid: the pipes' owner, so that a user-namespaced
  // container can reopen its stdout (/dev/stdout, /proc/self/fd/1). 0/0: root.
  uint32_t io_uid = 0, io_gid = 0;
  // runc-v2 waits for ready without a limit; a logger that never gets ready
  // must not hold a Create forever.
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(30);
};

struct StartedLogger {
  pid_t pid = 0;
  base::UniqueFd pidfd;     // names the logger for sure (opened before it ran)
  base::UniqueFd out, err;  // the pipes' write ends, for the container (close-on-exec)
};

// Starts the logger and waits until it is ready. Blocking (workers only).
// Errors name the logger; a logger that is not ready in time, or exits
// first, is killed and the call fails.
absl::StatusOr<StartedLogger> StartLogger(const LoggerCommand& command,
                                          const LoggerOptions& options);

struct LoggerStopLimits {
  // For the logger to finish on its own after EOF (runc-v2 gives its copy
  // goroutines 2 s at delete).
  std::chrono::milliseconds grace = std::chrono::seconds(2);
  // After SIGTERM (runc-v2's binaryIOProcTermTimeout), then SIGKILL.
  std::chrono::milliseconds term = std::chrono::seconds(12);
};

enum class LoggerEnd {
  kExited,      // on its own, within the grace time
  kTerminated,  // after SIGTERM
  kKilled,      // after SIGKILL
};

// Makes sure the logger behind `pidfd` is gone: waits `grace` for it to
// exit, then SIGTERM, waits `term`, then SIGKILL and waits for that. An
// error only if it is still there after all that. Blocking (workers, or the
// `delete` subcommand).
absl::StatusOr<LoggerEnd> StopLogger(const base::UniqueFd& pidfd, LoggerStopLimits limits = {});

}  // namespace shim::oci
