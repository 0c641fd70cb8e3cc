// The container's stdio (non-terminal): containerd's own fifos, opened by the
// shim and handed to the runtime, so the container writes into them directly
// and nothing is copied through the shim (see README.md for why).
//
//   stdout/stderr  a fifo path           O_RDWR: never blocks, and the
//                                        container never gets EPIPE/SIGPIPE
//                                        while containerd's reader is away
//                  a non-fifo path       O_WRONLY|O_APPEND
//                  ""                    none (/dev/null)
//   stdout         file:///abs/path      O_WRONLY|O_APPEND|O_CREAT, 0644
//                                        (parent directories 0755 created);
//                                        stderr, unless "", goes there too
//                  binary:///abs/path?.. a logger (logger.h) reading both
//                                        streams through pipes; stderr's
//                                        value does not matter
//   stderr         file:///abs/path      as for stdout, when stdout is no URI
//   stdin          a fifo path           the read end for the container, plus
//                                        the shim's own write end (the
//                                        keepalive) so the container sees no
//                                        EOF before CloseIO
//                  a non-fifo path       O_RDONLY
//                  ""                    none (/dev/null)
//
// As runc-v2 (containerd's pkg/process/io.go), stdout's scheme decides for
// both output streams. Other schemes (fifo:// included, which runc-v2 cannot
// open either) are InvalidArgument.
//
// io_uid/io_gid (RuntimeOptions, for user-namespaced containers): runc-v2
// chowns the pipes it gives the container. The container's fds here are
// containerd's fifos and the logger's pipes themselves, so those are chowned:
// only then can a process in the user namespace reopen its own stdio
// (/dev/stdout, /proc/self/fd/N). Regular files (file://, plain paths) are
// never chowned, as runc-v2 never chowns them.
//
// No open can block, whether or not containerd has its ends open yet. Every
// fd is O_CLOEXEC in the shim; the runtime gets them through dup2.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "shim/oci/runc.h"

namespace shim::oci {

// CreateTaskRequest stdin/stdout/stderr; "" = none.
struct StdioPaths {
  std::string in, out, err;
};

struct StdioOptions {
  std::string ns, id;  // a binary:// logger's CONTAINER_NAMESPACE and CONTAINER_ID
  uint32_t io_uid = 0, io_gid = 0;  // 0/0: nothing is chowned
  std::chrono::milliseconds logger_ready_timeout = std::chrono::seconds(30);
};

struct OpenedStdio {
  // What the runtime and the container get (Runc::Create consumes it).
  ChildStdio child;
  // The shim's write end of the stdin fifo, held until CloseIO (then Reset()
  // it): the container sees EOF only once this and containerd's writer are
  // both closed. Invalid when stdin is not a fifo.
  base::UniqueFd stdin_keepalive;
  // A binary:// logger, started and ready (0 / invalid: none). The pidfd
  // names it for sure; the caller records it and lets the fd go.
  pid_t logger_pid = 0;
  base::UniqueFd logger_pidfd;
};

// Opens all three. Errors name the stream, the path and what failed; nothing
// stays open on failure (a logger started meanwhile sees EOF and leaves). If
// stdout and stderr are the same file it is opened once and shared (one open
// file description). Blocking only for a binary:// logger (until it is ready).
absl::StatusOr<OpenedStdio> OpenStdio(const StdioPaths& paths, const StdioOptions& options = {});

}  // namespace shim::oci
