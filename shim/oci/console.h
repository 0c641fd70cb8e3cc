// The terminal of a process with `terminal: true`: the runtime makes the pty
// inside the container and sends its master to the shim over a unix socket
// (--console-socket), as for runc-v2.
//
//   absl::StatusOr<ConsoleSocket> console = ConsoleSocket::Create();
//   runc.Exec(id, {..., .console_socket = console->path()}, ChildStdio{});
//   absl::StatusOr<base::UniqueFd> master = console->ReceiveMaster(timeout);
//
// The runtime connects, sends and exits during create/exec; the connection
// waits in the listener's backlog, with the fd queued on it, until
// ReceiveMaster accepts it after the runtime call has returned.
#pragma once

#include <stdint.h>

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace shim::oci {

// A listening unix socket, <RuntimeTempDir()>/ptyXXXXXX/pty.sock, in a
// private (0700) directory of its own. The destructor closes the socket and
// removes it and the directory.
class ConsoleSocket {
 public:
  // Errors name what failed. The path is kept well within sun_path's 108
  // bytes: a temp dir too long for that falls back to /tmp.
  static absl::StatusOr<ConsoleSocket> Create();

  ConsoleSocket(ConsoleSocket&& other) noexcept;
  ConsoleSocket& operator=(ConsoleSocket&& other) noexcept;
  ConsoleSocket(const ConsoleSocket&) = delete;
  ConsoleSocket& operator=(const ConsoleSocket&) = delete;
  ~ConsoleSocket();

  // For --console-socket.
  const std::string& path() const { return path_; }

  // Accepts one connection and receives the pty master sent over it
  // (SCM_RIGHTS), returned close-on-exec. Waits at most `timeout` in all:
  // DeadlineExceeded when nobody connected or sent in time; Unknown when the
  // peer sent no fd, or something that is not a terminal.
  absl::StatusOr<base::UniqueFd> ReceiveMaster(std::chrono::milliseconds timeout);

 private:
  ConsoleSocket(std::string dir, std::string path, base::UniqueFd listener);
  void Remove();

  std::string dir_;
  std::string path_;
  base::UniqueFd listener_;
};

// TIOCSWINSZ on a pty (ResizePty): width columns, height rows. Sizes beyond
// the kernel's 16 bits are InvalidArgument.
absl::Status SetWindowSize(int pty_fd, uint32_t width, uint32_t height);

}  // namespace shim::oci
