// keeper_stub_server CONTROL_SOCKET: a stand-in for the shim's server, for
// tests that drive the real keeper binary (keeper_tty_test.cc).
//
// The keeper starts it with the channel on fd 3, as it starts the server. It
// connects to CONTROL_SOCKET and hands the test that fd (SCM_RIGHTS) and its
// pid (the bytes), so that the test itself speaks to the keeper as its
// server. Then it waits: it leaves when the keeper closes the channel, or
// when a signal ends it (SIGTERM from the keeper on an upgrade, SIGKILL from
// the test for a "crash").
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CONTROL_SOCKET\n", argv[0]);
    return 2;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  constexpr int kChannel = 3;
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  if (sock < 0 || connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::perror("keeper_stub_server: connect");
    return 1;
  }
  std::string pid = std::to_string(getpid());
  iovec iov{pid.data(), pid.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &kChannel, sizeof kChannel);
  if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0) {
    std::perror("keeper_stub_server: sendmsg");
    return 1;
  }
  close(sock);
  // No events asked for: only the keeper's end closing (POLLHUP) wakes it.
  pollfd p{kChannel, 0, 0};
  while (poll(&p, 1, -1) >= 0 && !(p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
  }
  return 0;
}
