// The container's stdio (non-terminal): containerd's own fifos, opened by the
// shim and handed to the runtime, so the container writes into them directly
// and nothing is copied through the shim (see README.md for why).
//
//   stdout/stderr  a fifo path           O_RDWR: never blocks, and the
//                                        container never gets EPIPE/SIGPIPE
//                                        while containerd's reader is away
//                  file:///abs/path      O_WRONLY|O_APPEND|O_CREAT, 0640
//                                        (parent directories created)
//                  a non-fifo path       O_WRONLY|O_APPEND
//                  binary://...          Unimplemented
//                  ""                    none (/dev/null)
//   stdin          a fifo path           the read end for the container, plus
//                                        the shim's own write end (the
//                                        keepalive) so the container sees no
//                                        EOF before CloseIO
//                  a non-fifo path       O_RDONLY
//                  ""                    none (/dev/null)
//
// No open can block, whether or not containerd has its ends open yet. Every
// fd is O_CLOEXEC in the shim; the runtime gets them through dup2.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "shim/oci/runc.h"

namespace shim::oci {

// CreateTaskRequest stdin/stdout/stderr; "" = none.
struct StdioPaths {
  std::string in, out, err;
};

struct OpenedStdio {
  // What the runtime and the container get (Runc::Create consumes it).
  ChildStdio child;
  // The shim's write end of the stdin fifo, held until CloseIO (then Reset()
  // it): the container sees EOF only once this and containerd's writer are
  // both closed. Invalid when stdin is not a fifo.
  base::UniqueFd stdin_keepalive;
};

// Opens all three. Errors name the stream, the path and what failed; nothing
// stays open on failure. If stdout and stderr are the same file it is opened
// once and shared (one open file description).
absl::StatusOr<OpenedStdio> OpenStdio(const StdioPaths& paths);

}  // namespace shim::oci
