#include "shim/oci/console.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "base/errno_status.h"
#include "fmt/format.h"
#include "shim/oci/runc.h"
#include "shim/oci/spawn_util.h"

namespace shim::oci {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kDirPattern[] = "/ptyXXXXXX";
constexpr char kSocketName[] = "/pty.sock";

// Waits for POLLIN (or hangup/error) on fd until the deadline: true if it
// came, false at the deadline.
absl::StatusOr<bool> WaitReadable(int fd, Clock::time_point deadline) {
  while (true) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    int n = poll(&p, 1, MillisUntil(deadline));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return base::ErrnoStatus("poll console socket");
    if (n == 0 && Clock::now() >= deadline) return false;
  }
}

}  // namespace

absl::StatusOr<ConsoleSocket> ConsoleSocket::Create() {
  std::string base = RuntimeTempDir();
  // sun_path holds 108 bytes with the NUL; a long temp dir is not worth
  // failing a terminal for.
  if (base.size() + sizeof kDirPattern + sizeof kSocketName > sizeof(sockaddr_un::sun_path) - 16) {
    base = "/tmp";
  }
  std::string dir = base + kDirPattern;
  if (mkdtemp(dir.data()) == nullptr) {  // mode 0700
    return base::ErrnoStatus(fmt::format("console socket: mkdtemp {}", dir));
  }
  std::string path = dir + kSocketName;
  // From here on the destructor cleans up.
  ConsoleSocket console(dir, path, base::UniqueFd());

  base::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return base::ErrnoStatus("console socket: socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return base::ErrnoStatus(fmt::format("console socket: bind {}", path));
  }
  if (listen(fd.get(), 4) != 0) {
    return base::ErrnoStatus(fmt::format("console socket: listen {}", path));
  }
  console.listener_ = std::move(fd);
  return console;
}

ConsoleSocket::ConsoleSocket(std::string dir, std::string path, base::UniqueFd listener)
    : dir_(std::move(dir)), path_(std::move(path)), listener_(std::move(listener)) {}

ConsoleSocket::ConsoleSocket(ConsoleSocket&& other) noexcept
    : dir_(std::exchange(other.dir_, {})),
      path_(std::exchange(other.path_, {})),
      listener_(std::move(other.listener_)) {}

ConsoleSocket& ConsoleSocket::operator=(ConsoleSocket&& other) noexcept {
  if (this != &other) {
    Remove();
    dir_ = std::exchange(other.dir_, {});
    path_ = std::exchange(other.path_, {});
    listener_ = std::move(other.listener_);
  }
  return *this;
}

ConsoleSocket::~ConsoleSocket() { Remove(); }

void ConsoleSocket::Remove() {
  listener_.Reset();
  if (!path_.empty()) unlink(path_.c_str());
  if (!dir_.empty()) rmdir(dir_.c_str());
  path_.clear();
  dir_.clear();
}

absl::StatusOr<base::UniqueFd> ConsoleSocket::ReceiveMaster(std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  auto timed_out = [&](std::string_view what) {
    return absl::DeadlineExceededError(
        fmt::format("console socket {}: {} within {} ms", path_, what, timeout.count()));
  };
  if (!listener_) return absl::FailedPreconditionError("console socket: not open");

  base::UniqueFd conn;
  while (!conn) {
    absl::StatusOr<bool> ready = WaitReadable(listener_.get(), deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) return timed_out("the runtime did not connect");
    conn.Reset(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn && errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      return base::ErrnoStatus(fmt::format("console socket {}: accept", path_));
    }
  }

  // runc sends the terminal's name as data and the master with it; any data
  // without an fd is skipped.
  while (true) {
    absl::StatusOr<bool> ready = WaitReadable(conn.get(), deadline);
    if (!ready.ok()) return ready.status();
    if (!*ready) return timed_out("no terminal arrived");

    char data[512];
    iovec iov{.iov_base = data, .iov_len = sizeof data};
    // Room for a few fds, so that extra ones are received (and closed)
    // rather than truncated.
    alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return base::ErrnoStatus(fmt::format("console socket {}: recvmsg", path_));
    }

    std::vector<base::UniqueFd> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      return absl::UnknownError(
          fmt::format("console socket {}: too many fds sent (truncated)", path_));
    }
    if (fds.size() > 1) {
      return absl::UnknownError(
          fmt::format("console socket {}: {} fds sent, want 1", path_, fds.size()));
    }
    if (fds.size() == 1) {
      if (!isatty(fds[0].get())) {
        return absl::UnknownError(
            fmt::format("console socket {}: the fd sent is not a terminal", path_));
      }
      return std::move(fds[0]);
    }
    if (n == 0) {
      return absl::UnknownError(fmt::format(
          "console socket {}: the runtime closed the connection without sending a terminal",
          path_));
    }
  }
}

absl::Status SetWindowSize(int pty_fd, uint32_t width, uint32_t height) {
  constexpr uint32_t kMax = USHRT_MAX;
  if (width > kMax || height > kMax) {
    return absl::InvalidArgumentError(
        fmt::format("window size {}x{}: more than {} columns or rows", width, height, kMax));
  }
  winsize size{};
  size.ws_col = static_cast<unsigned short>(width);
  size.ws_row = static_cast<unsigned short>(height);
  if (ioctl(pty_fd, TIOCSWINSZ, &size) != 0) return base::ErrnoStatus("ioctl TIOCSWINSZ");
  return absl::OkStatus();
}

}  // namespace shim::oci
