#include "ttrpc/server.h"

#include <atomic>

#include "absl/container/flat_hash_map.h"
#include "base/absl_fmt.h"
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
  void Register(std::string service, std::string method, Handler handler) {
    handlers_[std::move(service)][std::move(method)] = std::move(handler);
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

  absl::Status AddRelayed(uint64_t id, std::string tag, ucred peer, Server::Relay relay) {
    if (connections_.contains(id))
      return absl::AlreadyExistsError(fmt::format("connection {} exists", id));
    auto conn = std::make_unique<Connection>();
    conn->id = id;
    conn->tag = std::move(tag);
    conn->peer = peer;
    conn->relay = std::move(relay);
    connections_[id] = std::move(conn);
    return absl::OkStatus();
  }

  void OnRelayedFrame(uint64_t id, Frame frame, uint32_t flags) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    OnFrame(*it->second, std::move(frame), flags);
  }

  void RemoveRelayed(uint64_t id) { Close(id); }

  size_t connection_count() const { return connections_.size(); }
  size_t pending_requests() const { return pending_; }
  base::EventLoop& loop() { return loop_; }

 private:
  struct Connection {
    uint64_t id = 0;
    std::string tag;  // the owner's, passed on in RequestContext
    Server::Relay relay;
    ucred peer{};
    bool closed = false;  // after a protocol error, nothing more is read
    // Open requests, each with its deadline timer (0 = none).
    absl::flat_hash_map<uint32_t, base::EventLoop::TimerId> streams;
  };

  void Log(const std::string& line) {
    if (options_.log) options_.log(line);
  }

  void OnFrame(Connection& conn, Frame frame, uint32_t flags) {
    const uint32_t stream = frame.header.stream_id;
    if (conn.closed) return;
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
    std::string_view bytes = frame.payload();
    if (!req.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
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
    ctx.connection_tag = conn.tag;
    ctx.frame_flags = flags;
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
    conn.closed = true;
    Send(conn, EncodeResponseFrame(stream, status));
  }

  void Send(Connection& conn, std::string frame) {
    conn.relay.send(std::move(frame));
    if (conn.closed) {
      const uint64_t id = conn.id;
      conn.relay.close();
      Close(id);
    }
  }

  void Close(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    Connection& conn = *it->second;
    for (auto& [stream, timer] : conn.streams) {
      if (timer != 0) loop_.CancelTimer(timer);
    }
    pending_ -= conn.streams.size();
    connections_.erase(it);  // late replies find no connection
    if (options_.on_disconnect) options_.on_disconnect(id);
  }

  base::EventLoop& loop_;
  Server::Options options_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, Handler>> handlers_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
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
absl::Status Server::AddRelayedConnection(uint64_t id, std::string tag, ucred peer,
                                          Relay relay) {
  return core_->AddRelayed(id, std::move(tag), peer, std::move(relay));
}
void Server::OnRelayedFrame(uint64_t id, Frame frame, uint32_t flags) {
  core_->OnRelayedFrame(id, std::move(frame), flags);
}
void Server::RemoveRelayedConnection(uint64_t id) { core_->RemoveRelayed(id); }
size_t Server::connection_count() const { return core_->connection_count(); }
size_t Server::pending_requests() const { return core_->pending_requests(); }

}  // namespace ttrpc
