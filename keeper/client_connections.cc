// The keeper's client connections: listeners, accepted connections (each a
// ttrpc::FramedConnection), and the requests the server has not answered.
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "keeper/keeper.h"

namespace keeper {

namespace {

std::string SocketPathOf(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  return addr.sun_path;
}

}  // namespace

absl::Status Keeper::AddListener(base::UniqueFd fd, std::string label) {
  auto l = std::make_unique<Listener>();
  l->path = SocketPathOf(fd.get());
  l->fd = std::move(fd);
  l->label = std::move(label);
  fcntl(l->fd.get(), F_SETFL, fcntl(l->fd.get(), F_GETFL) | O_NONBLOCK);
  Listener* raw = l.get();
  if (absl::Status st = loop_.Add(raw->fd.get(), EPOLLIN, [this, raw](uint32_t) { Accept(*raw); });
      !st.ok())
    return st;
  listeners_.push_back(std::move(l));
  return absl::OkStatus();
}

void Keeper::Accept(Listener& l) {
  for (;;) {
    base::UniqueFd fd(accept4(l.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return;
    uint64_t id = next_conn_++;
    if (absl::Status st = AddConn(id, std::move(fd), l.label); !st.ok()) {
      base::LogWarn("keeper: a new connection: {}", st);
      continue;
    }
    Conn& c = conns_[id];
    // Only our own uid may talk to the shim (CVE-2020-15257 was about this).
    if (c.peer.uid != geteuid()) {
      base::LogWarn("keeper: rejected a connection from pid {} uid {}", c.peer.pid, c.peer.uid);
      conns_.erase(id);
      continue;
    }
    if (channel_) ToServer({MsgType::kConnOpen, id, c.peer.uid, c.label, {}, {}});
  }
}

absl::Status Keeper::AddConn(uint64_t id, base::UniqueFd fd, std::string label,
                             std::string unsent, std::string_view partial) {
  ttrpc::FramedConnection::Handlers handlers;
  handlers.on_frame = [this, id](ttrpc::Frame frame) { OnFrameFromClient(id, std::move(frame)); };
  handlers.on_close = [this, id] {
    // The server asked for this close itself, or needs to hear of it.
    auto it = conns_.find(id);
    CloseConn(id, /*tell_server=*/it != conns_.end() && !it->second.io->closing());
  };
  auto io = ttrpc::FramedConnection::Create(loop_, std::move(fd), ttrpc::kMaxMessageSize,
                                            std::move(handlers), std::move(unsent), partial);
  if (!io.ok()) return io.status();
  Conn& c = conns_[id];
  c.io = std::move(*io);
  c.label = std::move(label);
  c.peer = c.io->peer();
  return absl::OkStatus();
}

void Keeper::OnFrameFromClient(uint64_t id, ttrpc::Frame frame) {
  const bool is_request =
      frame.header.type == static_cast<uint8_t>(ttrpc::MessageType::kRequest) && !frame.oversized;
  const uint32_t stream = frame.header.stream_id;
  // The server gets exactly the bytes the client sent (header and payload),
  // or only the header of a frame too large to keep.
  Msg msg{MsgType::kFrame, id, frame.oversized ? kFrameOversized : 0u, {},
          std::move(frame.bytes), {}};
  if (is_request) {
    uint64_t seq = next_seq_++;
    pending_[seq] = Pending{id, stream, msg.data};
    pending_index_[id][stream] = seq;
  }
  if (channel_) {
    ToServer(std::move(msg));
  } else if (!is_request) {
    // No server to explain the error to this peer: drop the connection.
    CloseConn(id, false);
  }
  // A request waits in pending_ for the next server.
}

void Keeper::FrameToClient(uint64_t id, std::string frame) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;  // the client left meanwhile
  // The stream id is all the keeper reads of an answer: its request is done.
  if (frame.size() >= ttrpc::kHeaderSize) {
    const uint32_t stream = ttrpc::DecodeHeader(frame.data()).stream_id;
    if (auto idx = pending_index_.find(id); idx != pending_index_.end()) {
      if (auto s = idx->second.find(stream); s != idx->second.end()) {
        pending_.erase(s->second);
        idx->second.erase(s);
      }
    }
  }
  it->second.io->Send(frame);
}

void Keeper::CloseConn(uint64_t id, bool tell_server) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  conns_.erase(it);  // off the loop and closed
  if (auto idx = pending_index_.find(id); idx != pending_index_.end()) {
    for (auto& [stream, seq] : idx->second) pending_.erase(seq);
    pending_index_.erase(idx);
  }
  if (tell_server && channel_) ToServer({MsgType::kConnClosed, id, 0, {}, {}, {}});
}

}  // namespace keeper
