// ConsoleSocket and SetWindowSize with real ptys: a forked child plays the
// runtime, sending a pty master over SCM_RIGHTS as runc does. No root.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "shim/oci/console.h"
#include "test/oci/oci_test_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using oci_test::Clock;
using oci_test::kDeadline;
using oci_test::ScopedEnv;
using shim::oci::ConsoleSocket;
using shim::oci::SetWindowSize;

std::string DirOf(const std::string& path) { return path.substr(0, path.rfind('/')); }

// What a runtime does with --console-socket: connect, send the fd (with the
// terminal's name as data, like runc), close. Returns 0 on success.
int SendFd(const std::string& socket_path, int fd, std::string_view data = "/dev/pts/x") {
  base::UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  if (!s || connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return 1;
  if (fd < 0) return 0;  // connect only
  iovec iov{.iov_base = const_cast<char*>(data.data()), .iov_len = data.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return sendmsg(s.get(), &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()) ? 0 : 2;
}

// Runs `body` in a child and waits until it has exited: like runc, the peer
// is gone before the shim receives.
void InChildToExit(const std::function<int()>& body) {
  pid_t pid = oci_test::ForkChild(body);
  int status = oci_test::WaitChild(pid, Clock::now() + kDeadline);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

TEST_CASE("ConsoleSocket: a private dir, a socket in it, both removed at the end", "[unit]") {
  std::string path, dir;
  {
    auto console = ConsoleSocket::Create();
    REQUIRE_OK(console);
    path = console->path();
    dir = DirOf(path);
    CHECK(path.size() < 100);
    CHECK_THAT(dir, Catch::Contains("/pty"));
    CHECK_THAT(path, Catch::EndsWith("/pty.sock"));
    struct stat st;
    REQUIRE(stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));

    // A moved-from socket removes nothing.
    ConsoleSocket moved = std::move(*console);
    CHECK(moved.path() == path);
    CHECK(stat(path.c_str(), &st) == 0);
  }
  CHECK(access(path.c_str(), F_OK) != 0);
  CHECK(access(dir.c_str(), F_OK) != 0);
}

TEST_CASE("ConsoleSocket: receives the pty master a peer sent and left, close-on-exec",
          "[unit]") {
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);
  const std::string path = console->path();
  InChildToExit([&] {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0) return 10;
    return SendFd(path, master);
  });

  auto master = console->ReceiveMaster(kDeadline);
  REQUIRE_OK(master);
  CHECK(isatty(master->get()));
  CHECK((fcntl(master->get(), F_GETFD) & FD_CLOEXEC) != 0);
  unsigned int pty_number = 0;
  CHECK(ioctl(master->get(), TIOCGPTN, &pty_number) == 0);  // a master, not a slave

  REQUIRE_OK(SetWindowSize(master->get(), 100, 30));
  winsize size{};
  REQUIRE(ioctl(master->get(), TIOCGWINSZ, &size) == 0);
  CHECK(size.ws_col == 100);
  CHECK(size.ws_row == 30);
}

TEST_CASE("ConsoleSocket: times out when nobody connects or nothing is sent", "[unit]") {
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);
  const auto timeout = std::chrono::milliseconds(200);

  auto start = Clock::now();
  auto master = console->ReceiveMaster(timeout);
  CHECK(master.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(Clock::now() - start >= timeout);
  CHECK(Clock::now() - start < std::chrono::seconds(10));

  // Connected, sending nothing, and still there.
  base::UniqueFd peer(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, console->path().c_str(), sizeof addr.sun_path - 1);
  REQUIRE(connect(peer.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  start = Clock::now();
  master = console->ReceiveMaster(timeout);
  CHECK(master.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(Clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("ConsoleSocket: a peer that sends no fd, or not a terminal, is an error at once",
          "[unit]") {
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);
  const std::string path = console->path();

  SECTION("connect and close") {
    InChildToExit([&] { return SendFd(path, -1); });
    auto master = console->ReceiveMaster(kDeadline);
    CHECK(master.status().code() == absl::StatusCode::kUnknown);
    CHECK_THAT(std::string(master.status().message()), Catch::Contains("without sending"));
  }
  SECTION("a pipe") {
    InChildToExit([&] {
      int fds[2];
      if (pipe(fds) != 0) return 10;
      return SendFd(path, fds[0]);
    });
    auto master = console->ReceiveMaster(kDeadline);
    CHECK(master.status().code() == absl::StatusCode::kUnknown);
    CHECK_THAT(std::string(master.status().message()), Catch::Contains("not a terminal"));
  }
}

TEST_CASE("ConsoleSocket: a temp dir too long for sun_path falls back to /tmp", "[unit]") {
  ScopedEnv xdg("XDG_RUNTIME_DIR", std::nullopt);
  ScopedEnv tmpdir("TMPDIR", "/" + std::string(100, 'x'));
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);
  CHECK_THAT(console->path(), Catch::StartsWith("/tmp/pty"));
}

TEST_CASE("ConsoleSocket: the dir is made in $XDG_RUNTIME_DIR when set", "[unit]") {
  test_support::ScopedTempDir runtime_dir;
  REQUIRE_OK(runtime_dir.status());
  ScopedEnv xdg("XDG_RUNTIME_DIR", runtime_dir.path());
  auto console = ConsoleSocket::Create();
  REQUIRE_OK(console);
  CHECK_THAT(console->path(), Catch::StartsWith(runtime_dir.path() + "/pty"));
}

TEST_CASE("SetWindowSize: sizes beyond 16 bits and non-terminals are errors", "[unit]") {
  base::UniqueFd master(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  REQUIRE(master.valid());
  CHECK(SetWindowSize(master.get(), 65536, 10).code() == absl::StatusCode::kInvalidArgument);
  CHECK(SetWindowSize(master.get(), 10, 65536).code() == absl::StatusCode::kInvalidArgument);
  REQUIRE_OK(SetWindowSize(master.get(), 65535, 1));

  base::UniqueFd null_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  absl::Status s = SetWindowSize(null_fd.get(), 80, 24);
  CHECK(!s.ok());
  CHECK_THAT(std::string(s.message()), Catch::StartsWith("ioctl TIOCSWINSZ"));
}

}  // namespace
