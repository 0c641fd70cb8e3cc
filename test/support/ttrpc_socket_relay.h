// SocketRelay: serves a ttrpc::Server on real sockets the way the keeper
// does in production. Each connection is a ttrpc::FramedConnection whose
// whole frames go to the server's relayed-connection API, and whose
// answers and closes come back the same way. For tests, benches and fuzz
// targets, which thus drive the one path production uses.
//
// Loop thread only, like the Server. Header-only: the fuzz build compiles
// its sources itself.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "ttrpc/framed_connection.h"
#include "ttrpc/server.h"

namespace test {

class SocketRelay {
 public:
  SocketRelay(base::EventLoop& loop, ttrpc::Server& server,
              uint32_t max_message_size = ttrpc::kMaxMessageSize)
      : loop_(loop), server_(server), max_(max_message_size) {}
  ~SocketRelay() {
    alive_.reset();
    for (auto& l : listeners_) loop_.Remove(l->fd.get());
    for (auto& [id, conn] : conns_) server_.RemoveRelayedConnection(id);
  }
  SocketRelay(const SocketRelay&) = delete;
  SocketRelay& operator=(const SocketRelay&) = delete;

  // Accepts connections on a listening socket; `tag` reaches the handlers
  // (RequestContext::connection_tag), as a keeper listener's label does.
  absl::Status Listen(base::UniqueFd listener, std::string tag = "") {
    auto l = std::make_unique<Listener>(Listener{std::move(listener), std::move(tag)});
    Listener* raw = l.get();
    if (absl::Status st = loop_.Add(raw->fd.get(), EPOLLIN, [this, raw](uint32_t) { Accept(*raw); });
        !st.ok())
      return st;
    listeners_.push_back(std::move(l));
    return absl::OkStatus();
  }

  // Serves one connected socket.
  absl::Status Add(base::UniqueFd fd, std::string tag = "") {
    const uint64_t id = next_id_++;
    std::weak_ptr<int> alive = alive_;
    ttrpc::FramedConnection::Handlers handlers;
    handlers.on_frame = [this, id](ttrpc::Frame frame) {
      server_.OnRelayedFrame(id, std::move(frame));
    };
    // Possibly called from inside the server's send: tell it later.
    handlers.on_close = [this, id, alive] {
      loop_.Post([this, id, alive] {
        if (alive.expired()) return;
        conns_.erase(id);
        server_.RemoveRelayedConnection(id);
      });
    };
    auto conn = ttrpc::FramedConnection::Create(loop_, std::move(fd), max_, std::move(handlers));
    if (!conn.ok()) return conn.status();
    ttrpc::Server::Relay relay;
    relay.send = [this, id, alive](std::string frame) {
      if (alive.expired()) return;
      if (auto it = conns_.find(id); it != conns_.end()) it->second->Send(frame);
    };
    relay.close = [this, id, alive] {
      if (alive.expired()) return;
      if (auto it = conns_.find(id); it != conns_.end()) it->second->CloseAfterFlush();
    };
    ucred peer = (*conn)->peer();
    conns_[id] = std::move(*conn);
    if (absl::Status st = server_.AddRelayedConnection(id, std::move(tag), peer, relay);
        !st.ok()) {
      conns_.erase(id);
      return st;
    }
    return absl::OkStatus();
  }

 private:
  struct Listener {
    base::UniqueFd fd;
    std::string tag;
  };

  void Accept(Listener& l) {
    for (;;) {
      base::UniqueFd fd(accept4(l.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) return;
      (void)Add(std::move(fd), l.tag);
    }
  }

  base::EventLoop& loop_;
  ttrpc::Server& server_;
  uint32_t max_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint64_t, std::unique_ptr<ttrpc::FramedConnection>> conns_;
  uint64_t next_id_ = 1;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // weak copies expire with us
};

}  // namespace test
