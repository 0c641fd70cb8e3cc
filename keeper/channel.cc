#include "keeper/channel.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/errno_status.h"

namespace keeper {
namespace {

constexpr size_t kHeader = 1 + 8 + 4 + 4;

void Put(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}

void SizeBuffers(int fd) {
  int size = static_cast<int>(kMaxMsgSize) * 2;
  // Root may exceed wmem_max; otherwise settle for what is allowed.
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

}  // namespace

absl::Status MakeChannel(base::UniqueFd& a, base::UniqueFd& b) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
    return base::ErrnoStatus("socketpair(SOCK_SEQPACKET)");
  a.Reset(fds[0]);
  b.Reset(fds[1]);
  SizeBuffers(a.get());
  SizeBuffers(b.get());
  return absl::OkStatus();
}

absl::Status SendMsg(int sock, const Msg& msg) {
  std::string head;
  head.reserve(kHeader + msg.text.size());
  uint8_t type = static_cast<uint8_t>(msg.type);
  uint32_t text_len = static_cast<uint32_t>(msg.text.size());
  Put(head, &type, 1);
  Put(head, &msg.conn, 8);
  Put(head, &msg.arg, 4);
  Put(head, &text_len, 4);
  head += msg.text;
  iovec iov[2] = {{head.data(), head.size()},
                  {const_cast<char*>(msg.data.data()), msg.data.size()}};
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = msg.data.empty() ? 1 : 2;
  if (msg.fds.size() > kMaxFds) return absl::InvalidArgumentError("channel: too many fds");
  for (const base::UniqueFd& fd : msg.fds)
    if (!fd) return absl::InvalidArgumentError("channel: an invalid fd in a message");
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
  if (!msg.fds.empty()) {
    int fds[kMaxFds];
    for (size_t i = 0; i < msg.fds.size(); ++i) fds[i] = msg.fds[i].get();
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(msg.fds.size() * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(msg.fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, msg.fds.size() * sizeof(int));
  }
  for (;;) {
    // The channel is non-blocking for reads only in spirit: a full buffer
    // means the peer is stuck, so wait for room rather than drop a message.
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n >= 0) return absl::OkStatus();
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      fd_set w;
      FD_ZERO(&w);
      FD_SET(sock, &w);
      timeval tv{5, 0};
      if (select(sock + 1, nullptr, &w, nullptr, &tv) > 0) continue;
    }
    return base::ErrnoStatus("channel sendmsg");
  }
}

absl::StatusOr<std::optional<Msg>> RecvMsg(int sock) {
  // Peek at the datagram's size first (no control buffer, so no fd is taken
  // twice) and allocate only that: a 4 MiB buffer per process would be most
  // of the shim's memory.
  ssize_t size;
  do {
    size = recv(sock, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  } while (size < 0 && errno == EINTR);
  if (size < 0 && errno == EAGAIN) return std::nullopt;
  if (size < 0) return base::ErrnoStatus("channel recv");
  std::string buf(static_cast<size_t>(size) + 1, '\0');  // +1: never a zero-length iov
  iovec iov{buf.data(), buf.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return std::nullopt;
  if (n < 0) return base::ErrnoStatus("channel recvmsg");
  if (n == 0) return absl::UnavailableError("channel closed");
  Msg msg;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        msg.fds.emplace_back(fd);
      }
    }
  }
  // MSG_CTRUNC: more fds than kMaxFds were sent; those that came are closed.
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
    return absl::DataLossError("channel: malformed message");
  absl::StatusOr<Msg> decoded = DecodeMsg(std::string_view(buf.data(), static_cast<size_t>(n)));
  if (!decoded.ok()) return decoded.status();  // the fds close with msg
  decoded->fds = std::move(msg.fds);
  return std::optional<Msg>(std::move(*decoded));
}

absl::StatusOr<Msg> DecodeMsg(std::string_view datagram) {
  if (datagram.size() < kHeader) return absl::DataLossError("channel: malformed message");
  const char* p = datagram.data();
  Msg msg;
  uint8_t type;
  uint32_t text_len;
  std::memcpy(&type, p, 1);
  std::memcpy(&msg.conn, p + 1, 8);
  std::memcpy(&msg.arg, p + 9, 4);
  std::memcpy(&text_len, p + 13, 4);
  if (text_len > datagram.size() - kHeader)
    return absl::DataLossError("channel: malformed message");
  msg.type = static_cast<MsgType>(type);
  msg.text.assign(p + kHeader, text_len);
  msg.data.assign(p + kHeader + text_len, datagram.size() - kHeader - text_len);
  return msg;
}

}  // namespace keeper
