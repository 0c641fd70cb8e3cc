// The keeper: starting and stopping, and the messages of its channel with
// the server. Client connections, the server's supervision and the upgrade
// are in client_connections.cc, server_supervisor.cc and upgrade.cc.
#include "keeper/keeper.h"

#include <unistd.h>

#include <csignal>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/unix_socket.h"

namespace keeper {

Keeper::Keeper(base::EventLoop& loop, Config config)
    : loop_(loop), config_(std::move(config)) {}

absl::Status Keeper::Start() {
  unlink(config_.socket_path.c_str());  // `start` holds the lock: nobody listens
  auto fd = base::ListenUnix(config_.socket_path);
  if (!fd.ok()) return fd.status();
  if (absl::Status st = AddListener(std::move(*fd), ""); !st.ok()) return st;
  SpawnServer();
  return absl::OkStatus();
}

void Keeper::Stop() {
  shutting_down_ = true;
  if (server_pid_ > 0) kill(server_pid_, SIGTERM);
  loop_.Stop();
}

void Keeper::ToServer(Msg msg) {
  if (!channel_) return;
  if (absl::Status st = SendMsg(channel_.get(), msg); !st.ok())
    base::LogWarn("keeper: to server: {}", st);  // its death is noticed through the pidfd
}

void Keeper::OnChannel() {
  for (int i = 0; i < 64 && channel_; ++i) {
    auto msg = RecvMsg(channel_.get());
    if (!msg.ok()) {
      // The server is gone; its pidfd tells us when it is reaped.
      loop_.Remove(channel_.get());
      return;
    }
    if (!msg->has_value()) return;
    OnServerMsg(std::move(**msg));
  }
}

void Keeper::OnServerMsg(Msg msg) {
  switch (msg.type) {
    case MsgType::kFrame:
      FrameToClient(msg.conn, std::move(msg.data));
      return;
    case MsgType::kConnClosed:
      // Once its answers are written; the server has forgotten it already.
      if (auto it = conns_.find(msg.conn); it != conns_.end()) it->second.io->CloseAfterFlush();
      return;
    case MsgType::kListenFd:
      if (msg.fds.size() == 1) (void)AddListener(std::move(msg.fds[0]), msg.text);
      return;
    case MsgType::kKeepFd:
      if (msg.fds.size() == 1) kept_[msg.text] = std::move(msg.fds[0]);
      return;
    case MsgType::kDropFd:
      kept_.erase(msg.text);
      return;
    case MsgType::kReady:
      server_served_ = true;
      if (config_.ready_fd) {
        (void)!write(config_.ready_fd.get(), "ready\n", 6);
        config_.ready_fd.Reset();
      }
      return;
    case MsgType::kUpgrade:
      loop_.Post([this] { Upgrade(); });  // after this batch of messages
      return;
    case MsgType::kTtyRelay:
    case MsgType::kTtyResize:
    case MsgType::kTtyCloseIn:
    case MsgType::kTtyDrop:
      OnTtyMsg(std::move(msg));
      return;
    case MsgType::kShutdown:
      // The server holds the start lock and removes the rest once we are gone.
      shutting_down_ = true;
      for (auto& l : listeners_) {
        loop_.Remove(l->fd.get());
        if (!l->path.empty()) unlink(l->path.c_str());
      }
      listeners_.clear();
      loop_.Stop();
      return;
    default:
      base::LogWarn("keeper: unexpected message {} from the server", static_cast<int>(msg.type));
  }
}

void Keeper::OnTtyMsg(Msg msg) {
  auto it = ttys_.find(msg.text);
  switch (msg.type) {
    case MsgType::kTtyRelay: {
      // A replayed relay of a name we hold keeps the one running; its fds
      // (copies of the same files) close with msg.
      if (it != ttys_.end()) return;
      size_t expected = 1 + ((msg.arg & kTtyHasIn) ? 1 : 0) + ((msg.arg & kTtyHasOut) ? 1 : 0);
      if (msg.fds.size() != expected) {
        base::LogWarn("keeper: tty {}: {} fds, expected {}; ignored", msg.text, msg.fds.size(),
                expected);
        return;
      }
      size_t next = 0;
      base::UniqueFd master = std::move(msg.fds[next++]);
      base::UniqueFd in = (msg.arg & kTtyHasIn) ? std::move(msg.fds[next++]) : base::UniqueFd();
      base::UniqueFd out = (msg.arg & kTtyHasOut) ? std::move(msg.fds[next++]) : base::UniqueFd();
      auto relay = std::make_unique<TtyRelay>(loop_, msg.text, std::move(master), std::move(in),
                                              std::move(out));
      relay->Start();
      ttys_[msg.text] = std::move(relay);
      return;
    }
    case MsgType::kTtyResize:
      if (it != ttys_.end()) it->second->Resize(msg.arg, static_cast<uint32_t>(msg.conn));
      return;
    case MsgType::kTtyCloseIn:
      if (it != ttys_.end()) it->second->CloseInput();
      return;
    case MsgType::kTtyDrop:
      if (it != ttys_.end()) ttys_.erase(it);
      return;
    default:
      return;
  }
}

}  // namespace keeper
