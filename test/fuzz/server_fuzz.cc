// Feeds arbitrary bytes to a real ttrpc Server over a socket (relayed to it
// as the keeper does) and runs its
// loop until the server has dealt with them and seen EOF. Any crash, leak or
// undefined behaviour in request handling shows up here.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

#include "test/support/ttrpc_socket_relay.h"
#include "ttrpc/server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 128 * 1024) return 0;  // stays within the socket buffer
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;
  base::UniqueFd client(fds[0]);
  auto loop = base::EventLoop::Create();
  if (!loop.ok()) return 0;
  ttrpc::ServerOptions opts;
  opts.max_message_size = 4096;
  opts.on_disconnect = [&](uint64_t) { (*loop)->Stop(); };
  auto server = std::make_unique<ttrpc::Server>(**loop, opts);
  server->Register("svc", "Echo", [](ttrpc::RequestContext, std::string p,
                                     ttrpc::Responder r) { r.Reply(std::move(p)); });
  // A handler that never answers: its request must be cleaned up on close.
  server->Register("svc", "Hold", [](ttrpc::RequestContext, std::string, ttrpc::Responder) {});
  auto relay = std::make_unique<test::SocketRelay>(**loop, *server, opts.max_message_size);
  if (!relay->Add(base::UniqueFd(fds[1])).ok()) return 0;
  // Responses may fill the buffer; the server copes by buffering them.
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(client.get(), data + off, size - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  shutdown(client.get(), SHUT_WR);
  (*loop)->Run();  // ends when the server closes the connection
  relay.reset();
  server.reset();
  return 0;
}
