// Fuzzes the keeper <-> server channel (keeper/channel.*): arbitrary
// datagrams through a real SOCK_SEQPACKET pair into RecvMsg, and every
// message that decodes sent back with SendMsg and received unchanged.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "keeper/channel.h"

namespace {

struct Pair {
  base::UniqueFd a, b;
};

Pair& Channel() {
  static Pair* pair = [] {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) __builtin_trap();
    auto* p = new Pair;
    p->a.Reset(fds[0]);
    p->b.Reset(fds[1]);
    return p;
  }();
  return *pair;
}

bool Same(const keeper::Msg& x, const keeper::Msg& y) {
  return x.type == y.type && x.conn == y.conn && x.arg == y.arg && x.text == y.text &&
         x.data == y.data;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 64 * 1024) return 0;  // one datagram within the socket buffer
  Pair& ch = Channel();
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<keeper::Msg> direct = keeper::DecodeMsg(bytes);

  if (send(ch.a.get(), data, size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) return 0;
  absl::StatusOr<std::optional<keeper::Msg>> got = keeper::RecvMsg(ch.b.get());
  // RecvMsg decodes what DecodeMsg decodes, and fails where it fails.
  if (got.ok() != direct.ok()) __builtin_trap();
  if (!got.ok()) return 0;
  if (!got->has_value() || !Same(**got, *direct)) __builtin_trap();

  if (!keeper::SendMsg(ch.a.get(), **got).ok()) __builtin_trap();
  absl::StatusOr<std::optional<keeper::Msg>> back = keeper::RecvMsg(ch.b.get());
  if (!back.ok() || !back->has_value() || !Same(**back, *direct)) __builtin_trap();
  return 0;
}
