#include "ttrpc/server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "ttrpc/ttrpc.pb.h"
#include "ttrpc/wire.h"

namespace ttrpc {

struct Responder::State {
  std::weak_ptr<ServerCore> core;
  base::EventLoop* loop;
  uint64_t connection_id;
  uint32_t stream_id;
  std::atomic<bool> replied{false};
};

// The server's state. Shared with Responders through weak pointers, so a
// reply that outlives the server or its connection is dropped safely.
class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(base::EventLoop& loop, Server::Options options)
      : loop_(loop), options_(std::move(options)) {}
  ~ServerCore() {
    for (auto& [id, conn] : connections_) loop_.Remove(conn->fd.get());
    for (auto& l : listeners_) loop_.Remove(l->fd.get());
  }

  void Register(std::string service, std::string method, Handler handler) {
    handlers_[std::move(service)][std::move(method)] = std::move(handler);
  }

  absl::Status Serve(base::UniqueFd listener, std::string label) {
    int fd = listener.get();
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
      return base::ErrnoStatus("fcntl(O_NONBLOCK)");
    auto l = std::make_unique<Listener>(Listener{std::move(listener), std::move(label)});
    Listener* raw = l.get();
    if (absl::Status st = loop_.Add(fd, EPOLLIN, [this, raw](uint32_t) { Accept(*raw); });
        !st.ok())
      return st;
    listeners_.push_back(std::move(l));
    return absl::OkStatus();
  }

  absl::Status AddConnection(base::UniqueFd fd, std::string label) {
    // The loop must never block on a peer, whoever created this socket.
    if (fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0)
      return base::ErrnoStatus("fcntl(O_NONBLOCK)");
    ucred peer{};
    socklen_t len = sizeof peer;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
      return base::ErrnoStatus("getsockopt(SO_PEERCRED)");
    if (options_.require_same_uid && peer.uid != geteuid()) {
      Log(fmt::format("rejected connection from pid {} uid {}: only uid {} may connect",
                      peer.pid, peer.uid, geteuid()));
      return absl::PermissionDeniedError("peer uid differs from the server's");
    }
    auto conn = std::make_unique<Connection>();
    conn->id = next_connection_id_++;
    conn->fd = std::move(fd);
    conn->decoder = FrameDecoder(options_.max_message_size);
    conn->peer = peer;
    conn->label = std::move(label);
    uint64_t id = conn->id;
    absl::Status st = loop_.Add(conn->fd.get(), EPOLLIN | EPOLLRDHUP,
                                [this, id](uint32_t events) { OnEvents(id, events); });
    if (!st.ok()) return st;
    connections_[id] = std::move(conn);
    return absl::OkStatus();
  }

  // Called on the loop thread with a response frame for (connection, stream).
  void Finish(uint64_t connection_id, uint32_t stream_id, std::string frame) {
    auto it = connections_.find(connection_id);
    if (it == connections_.end()) return;  // the client went away
    Connection& conn = *it->second;
    auto stream = conn.streams.find(stream_id);
    if (stream == conn.streams.end()) return;
    if (stream->second != 0) loop_.CancelTimer(stream->second);
    conn.streams.erase(stream);
    --pending_;
    Send(conn, std::move(frame));
  }

  absl::Status AddRelayed(uint64_t id, std::string label, ucred peer, Server::Relay relay) {
    if (connections_.contains(id))
      return absl::AlreadyExistsError(fmt::format("connection {} exists", id));
    auto conn = std::make_unique<Connection>();
    conn->id = id;
    conn->label = std::move(label);
    conn->peer = peer;
    conn->relay = std::move(relay);
    connections_[id] = std::move(conn);
    // Relayed ids come from the owner; keep ours clear of them.
    next_connection_id_ = std::max(next_connection_id_, id + 1);
    return absl::OkStatus();
  }

  void OnRelayedFrame(uint64_t id, Frame frame, bool replayed) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    OnFrame(*it->second, std::move(frame), replayed);
  }

  void RemoveRelayed(uint64_t id) { Close(id); }

  size_t connection_count() const { return connections_.size(); }
  size_t pending_requests() const { return pending_; }
  base::EventLoop& loop() { return loop_; }

 private:
  struct Listener {
    base::UniqueFd fd;
    std::string label;
  };

  struct Connection {
    uint64_t id = 0;
    std::string label;  // of the listener that accepted it
    base::UniqueFd fd;  // invalid for a relayed connection
    std::optional<Server::Relay> relay;
    FrameDecoder decoder;
    ucred peer{};
    std::string out;  // bytes not yet written
    bool close_after_flush = false;
    // Open requests, each with its deadline timer (0 = none).
    absl::flat_hash_map<uint32_t, base::EventLoop::TimerId> streams;
  };

  void Log(const std::string& line) {
    if (options_.log) options_.log(line);
  }

  void Accept(Listener& listener) {
    for (;;) {
      base::UniqueFd fd(accept4(listener.fd.get(), nullptr, nullptr,
                                SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          Log(fmt::format("accept: {}", std::strerror(errno)));
        return;
      }
      absl::Status st = AddConnection(std::move(fd), listener.label);
      if (!st.ok() && !absl::IsPermissionDenied(st))
        Log(fmt::format("serving a new connection: {}", st.message()));
    }
  }

  void OnEvents(uint64_t id, uint32_t events) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    Connection& conn = *it->second;
    if (events & EPOLLOUT) {
      if (!Flush(conn)) return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) Read(conn);
  }

  void Read(Connection& conn) {
    char buf[64 * 1024];
    // Bounded, so that one busy connection cannot starve the others; epoll
    // is level-triggered and brings us back.
    for (int round = 0; round < 16; ++round) {
      ssize_t n = read(conn.fd.get(), buf, sizeof buf);
      if (n > 0) {
        conn.decoder.Feed(std::string_view(buf, static_cast<size_t>(n)));
        uint64_t id = conn.id;
        while (auto frame = conn.decoder.Next()) {
          OnFrame(conn, std::move(*frame));
          if (!connections_.contains(id)) return;
        }
        if (conn.close_after_flush) return;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      Close(conn.id);  // EOF or error: the client is gone
      return;
    }
  }

  void OnFrame(Connection& conn, Frame frame, bool replayed = false) {
    const uint32_t stream = frame.header.stream_id;
    if (conn.close_after_flush) return;
    if (frame.oversized) {
      ProtocolError(conn, stream, absl::ResourceExhaustedError(fmt::format(
          "message length {} exceeds maximum message size of {}",
          frame.header.length, options_.max_message_size)));
      return;
    }
    if (frame.header.type != static_cast<uint8_t>(MessageType::kRequest)) {
      ProtocolError(conn, stream, absl::InvalidArgumentError(fmt::format(
          "unexpected message type {:#04x} on stream {}: this server accepts only requests",
          frame.header.type, stream)));
      return;
    }
    if (stream % 2 == 0) {
      Send(conn, EncodeResponseFrame(stream, absl::InvalidArgumentError(fmt::format(
          "StreamID must be odd for client initiated streams, got {}", stream))));
      return;
    }
    if (conn.streams.contains(stream)) {
      ProtocolError(conn, stream, absl::InvalidArgumentError(
          fmt::format("stream {} is already in use", stream)));
      return;
    }
    Request req;
    if (!req.ParseFromString(frame.payload)) {
      Send(conn, EncodeResponseFrame(stream, absl::InvalidArgumentError(
          fmt::format("stream {}: request frame is not a ttrpc Request", stream))));
      return;
    }
    auto service = handlers_.find(req.service());
    if (service == handlers_.end()) {
      Send(conn, EncodeResponseFrame(stream, absl::UnimplementedError(
          fmt::format("service {}", req.service()))));
      return;
    }
    auto method = service->second.find(req.method());
    if (method == service->second.end()) {
      Send(conn, EncodeResponseFrame(stream, absl::UnimplementedError(
          fmt::format("method {}", req.method()))));
      return;
    }

    RequestContext ctx;
    ctx.connection_id = conn.id;
    ctx.stream_id = stream;
    ctx.service = req.service();
    ctx.method = req.method();
    ctx.peer = conn.peer;
    ctx.listener_label = conn.label;
    ctx.replayed = replayed;
    for (const KeyValue& kv : req.metadata()) ctx.metadata.emplace_back(kv.key(), kv.value());

    auto state = std::make_shared<Responder::State>();
    state->core = weak_from_this();
    state->loop = &loop_;
    state->connection_id = conn.id;
    state->stream_id = stream;
    Responder responder(state);

    base::EventLoop::TimerId timer = 0;
    if (req.timeout_nano() > 0) {
      absl::Duration timeout = absl::Nanoseconds(req.timeout_nano());
      ctx.deadline = absl::Now() + timeout;
      timer = loop_.RunAfter(timeout, [responder] {
        responder.Reply(absl::DeadlineExceededError("deadline exceeded"));
      });
    }
    conn.streams[stream] = timer;
    ++pending_;
    // The handler may reply synchronously, which can close nothing but does
    // touch conn.streams: no references into `conn` are used after this.
    method->second(std::move(ctx), std::move(*req.mutable_payload()), responder);
  }

  // Answers the offending stream, then closes the connection: after a
  // protocol violation nothing more from this peer can be trusted.
  void ProtocolError(Connection& conn, uint32_t stream, const absl::Status& status) {
    Log(fmt::format("connection {} (pid {}): {}; closing it", conn.id, conn.peer.pid,
                    status.message()));
    conn.close_after_flush = true;
    Send(conn, EncodeResponseFrame(stream, status));
  }

  void Send(Connection& conn, std::string frame) {
    if (conn.relay) {
      conn.relay->send(std::move(frame));
      if (conn.close_after_flush) {
        conn.relay->close();
        Close(conn.id);
      }
      return;
    }
    if (conn.out.empty()) {
      ssize_t n = send(conn.fd.get(), frame.data(), frame.size(), MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        Close(conn.id);
        return;
      }
      if (n < 0) n = 0;
      frame.erase(0, static_cast<size_t>(n));
      if (frame.empty()) {
        if (conn.close_after_flush) Close(conn.id);
        return;
      }
      conn.out = std::move(frame);
      (void)loop_.Modify(conn.fd.get(), EPOLLIN | EPOLLRDHUP | EPOLLOUT);
      return;
    }
    conn.out += frame;
  }

  // Returns false if the connection was closed.
  bool Flush(Connection& conn) {
    while (!conn.out.empty()) {
      ssize_t n = send(conn.fd.get(), conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        Close(conn.id);
        return false;
      }
      conn.out.erase(0, static_cast<size_t>(n));
    }
    if (conn.close_after_flush) {
      Close(conn.id);
      return false;
    }
    (void)loop_.Modify(conn.fd.get(), EPOLLIN | EPOLLRDHUP);
    return true;
  }

  void Close(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    Connection& conn = *it->second;
    for (auto& [stream, timer] : conn.streams) {
      if (timer != 0) loop_.CancelTimer(timer);
    }
    pending_ -= conn.streams.size();
    if (conn.fd) loop_.Remove(conn.fd.get());
    connections_.erase(it);  // closes the fd; late replies find no connection
    if (options_.on_disconnect) options_.on_disconnect(id);
  }

  base::EventLoop& loop_;
  Server::Options options_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, Handler>> handlers_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  uint64_t next_connection_id_ = 1;
  size_t pending_ = 0;
};

void Responder::Reply(absl::StatusOr<std::string> payload) const {
  if (state_->replied.exchange(true)) return;
  std::string frame = payload.ok() ? EncodeResponseFrame(state_->stream_id, *payload)
                                   : EncodeResponseFrame(state_->stream_id, payload.status());
  auto finish = [core = state_->core, conn = state_->connection_id,
                 stream = state_->stream_id, frame = std::move(frame)]() mutable {
    if (auto c = core.lock()) c->Finish(conn, stream, std::move(frame));
  };
  if (state_->loop->InLoopThread()) {
    finish();
  } else {
    state_->loop->Post(std::move(finish));
  }
}

bool Responder::replied() const { return state_->replied.load(); }

Server::Server(base::EventLoop& loop, Options options)
    : core_(std::make_shared<ServerCore>(loop, std::move(options))) {}
Server::~Server() = default;

void Server::Register(std::string service, std::string method, Handler handler) {
  core_->Register(std::move(service), std::move(method), std::move(handler));
}
absl::Status Server::Serve(base::UniqueFd listener, std::string label) {
  return core_->Serve(std::move(listener), std::move(label));
}
absl::Status Server::AddConnection(base::UniqueFd c, std::string label) {
  return core_->AddConnection(std::move(c), std::move(label));
}
absl::Status Server::AddRelayedConnection(uint64_t id, std::string label, ucred peer,
                                          Relay relay) {
  return core_->AddRelayed(id, std::move(label), peer, std::move(relay));
}
void Server::OnRelayedFrame(uint64_t id, Frame frame, bool replayed) {
  core_->OnRelayedFrame(id, std::move(frame), replayed);
}
void Server::RemoveRelayedConnection(uint64_t id) { core_->RemoveRelayed(id); }
size_t Server::connection_count() const { return core_->connection_count(); }
size_t Server::pending_requests() const { return core_->pending_requests(); }

}  // namespace ttrpc
