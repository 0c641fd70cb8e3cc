#include "keeper/link.h"

#include <fcntl.h>
#include <poll.h>

#include "base/absl_fmt.h"
#include "base/log.h"

namespace keeper {


Link::Link(base::EventLoop& loop, base::UniqueFd channel, ttrpc::Server& server)
    : loop_(loop), channel_(std::move(channel)), server_(server) {}

absl::Status Link::Start() {
  fcntl(channel_.get(), F_SETFD, FD_CLOEXEC);  // runc must not inherit it
  fcntl(channel_.get(), F_SETFL, fcntl(channel_.get(), F_GETFL) | O_NONBLOCK);
  for (int i = 0; i < 100 && !hello_done_; ++i) {
    pollfd p{channel_.get(), POLLIN, 0};
    if (poll(&p, 1, 50) > 0) OnReadable();
  }
  if (!hello_done_) base::LogWarn("keeper channel: no hello from the keeper");
  return loop_.Add(channel_.get(), EPOLLIN, [this](uint32_t) { OnReadable(); });
}

void Link::OnReadable() {
  for (int i = 0; i < 256; ++i) {
    auto msg = keeper::RecvMsg(channel_.get());
    if (!msg.ok()) {
      base::LogError("keeper channel: {}; the keeper is gone", msg.status());
      loop_.Remove(channel_.get());
      if (on_gone_) on_gone_();
      return;
    }
    if (!msg->has_value()) return;
    Msg& m = **msg;
    switch (m.type) {
      case MsgType::kConnOpen: {
        ucred peer{};
        peer.uid = m.arg;
        uint64_t conn = m.conn;
        ttrpc::Server::Relay relay{
            [this, conn](std::string frame) {
              Send({MsgType::kFrame, conn, 0, {}, std::move(frame), {}});
            },
            [this, conn] { Send({MsgType::kConnClosed, conn, 0, {}, {}, {}}); }};
        (void)server_.AddRelayedConnection(conn, m.text, peer, std::move(relay));
        break;
      }
      case MsgType::kFrame: {
        // The client's bytes as they came, header and all.
        std::optional<ttrpc::Frame> frame =
            ttrpc::FrameFromBytes(std::move(m.data), m.arg & keeper::kFrameOversized);
        if (frame) server_.OnRelayedFrame(m.conn, std::move(*frame), m.arg & kFrameReplayed);
        break;
      }
      case MsgType::kConnClosed:
        server_.RemoveRelayedConnection(m.conn);
        break;
      case MsgType::kListening:
        listening_.insert(m.text);
        break;
      case MsgType::kTtyKnown:
        ttys_.insert(m.text);
        break;
      case MsgType::kHelloDone:
        hello_done_ = true;
        return;  // replayed requests follow; the loop serves them
      default:
        base::LogWarn("keeper channel: unexpected message {}", static_cast<int>(m.type));
    }
  }
}

void Link::Send(Msg msg) {
  if (absl::Status st = keeper::SendMsg(channel_.get(), msg); !st.ok())
    base::LogError("keeper channel: {}", st);
}

void Link::Listen(const std::string& label, base::UniqueFd listener) {
  listening_.insert(label);
  Msg msg{MsgType::kListenFd, 0, 0, label, {}, {}};
  if (listener) msg.fds.push_back(std::move(listener));
  Send(std::move(msg));
}

void Link::Keep(const std::string& name, base::UniqueFd fd) {
  Msg msg{MsgType::kKeepFd, 0, 0, name, {}, {}};
  if (fd) msg.fds.push_back(std::move(fd));
  Send(std::move(msg));
}

void Link::RelayTty(const std::string& name, base::UniqueFd master, base::UniqueFd in,
                          base::UniqueFd out) {
  if (!master) {
    base::LogError("keeper channel: tty {}: no pty master to relay", name);
    return;
  }
  Msg msg{MsgType::kTtyRelay, 0, 0, name, {}, {}};
  msg.fds.push_back(std::move(master));
  if (in) {
    msg.arg |= keeper::kTtyHasIn;
    msg.fds.push_back(std::move(in));
  }
  if (out) {
    msg.arg |= keeper::kTtyHasOut;
    msg.fds.push_back(std::move(out));
  }
  ttys_.insert(name);
  Send(std::move(msg));
}

void Link::ResizeTty(const std::string& name, uint32_t width, uint32_t height) {
  Send({MsgType::kTtyResize, height, width, name, {}, {}});
}

void Link::CloseTtyInput(const std::string& name) {
  Send({MsgType::kTtyCloseIn, 0, 0, name, {}, {}});
}

void Link::DropTty(const std::string& name) {
  ttys_.erase(name);
  Send({MsgType::kTtyDrop, 0, 0, name, {}, {}});
}

void Link::Drop(const std::string& name) {
  Send({MsgType::kDropFd, 0, 0, name, {}, {}});
}

void Link::Ready() { Send({MsgType::kReady, 0, 0, {}, {}, {}}); }

void Link::Upgrade() {
  loop_.Post([this] { Send({MsgType::kUpgrade, 0, 0, {}, {}, {}}); });
}

void Link::ShutdownAndWait() {
  loop_.Remove(channel_.get());
  Send({MsgType::kShutdown, 0, 0, {}, {}, {}});
  for (int i = 0; i < 100; ++i) {
    pollfd p{channel_.get(), POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    auto msg = keeper::RecvMsg(channel_.get());
    if (!msg.ok()) return;  // EOF: the keeper has left
  }
}

}  // namespace keeper
