#include "ttrpc/framed_connection.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "base/errno_status.h"

namespace ttrpc {

absl::StatusOr<std::unique_ptr<FramedConnection>> FramedConnection::Create(
    base::EventLoop& loop, base::UniqueFd fd, uint32_t max_message_size, Handlers handlers,
    std::string unsent, std::string_view partial) {
  // The loop must never block on a peer, whoever created this socket.
  if (fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0)
    return base::ErrnoStatus("fcntl(O_NONBLOCK)");
  std::unique_ptr<FramedConnection> c(
      new FramedConnection(loop, std::move(fd), max_message_size, std::move(handlers)));
  socklen_t len = sizeof c->peer_;
  if (getsockopt(c->fd_.get(), SOL_SOCKET, SO_PEERCRED, &c->peer_, &len) != 0)
    return base::ErrnoStatus("getsockopt(SO_PEERCRED)");
  c->out_ = std::move(unsent);
  c->decoder_.Feed(partial);
  c->watching_out_ = !c->out_.empty();
  FramedConnection* raw = c.get();
  if (absl::Status st =
          loop.Add(raw->fd_.get(), EPOLLIN | EPOLLRDHUP | (raw->watching_out_ ? EPOLLOUT : 0u),
                   [raw](uint32_t events) { raw->OnEvents(events); });
      !st.ok())
    return st;
  return c;
}

FramedConnection::FramedConnection(base::EventLoop& loop, base::UniqueFd fd,
                                   uint32_t max_message_size, Handlers handlers)
    : loop_(loop), fd_(std::move(fd)), decoder_(max_message_size),
      handlers_(std::move(handlers)) {}

FramedConnection::~FramedConnection() {
  *alive_ = false;
  if (fd_) loop_.Remove(fd_.get());
}

void FramedConnection::OnEvents(uint32_t events) {
  if (!fd_) return;
  if ((events & EPOLLOUT) && !Flush()) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) Read();
}

bool FramedConnection::Read() {
  char buf[64 * 1024];
  // Bounded, so that one busy connection cannot starve the others; epoll is
  // level-triggered and brings us back.
  for (int round = 0; round < 16; ++round) {
    ssize_t n = read(fd_.get(), buf, sizeof buf);
    if (n > 0) {
      // After CloseAfterFlush nothing more from this peer is wanted.
      if (closing_) continue;
      decoder_.Feed(std::string_view(buf, static_cast<size_t>(n)));
      std::shared_ptr<bool> alive = alive_;
      while (auto frame = decoder_.Next()) {
        handlers_.on_frame(std::move(*frame));
        if (!*alive || !fd_) return false;
        if (closing_) break;
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return ReportClose();  // EOF or error: the peer is gone
  }
  return true;
}

void FramedConnection::Send(std::string_view frames) {
  if (!fd_ || frames.empty()) return;
  if (out_.empty()) {
    ssize_t n = send(fd_.get(), frames.data(), frames.size(), MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      ReportClose();
      return;
    }
    frames.remove_prefix(n > 0 ? static_cast<size_t>(n) : 0);
    if (frames.empty()) return;
  }
  out_.append(frames);
  WatchWritable(true);
}

void FramedConnection::CloseAfterFlush() {
  if (closing_ || !fd_) return;
  closing_ = true;
  if (out_.empty()) ReportClose();
}

bool FramedConnection::Flush() {
  while (!out_.empty()) {
    ssize_t n = send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return true;
      return ReportClose();
    }
    out_.erase(0, static_cast<size_t>(n));
  }
  if (closing_) return ReportClose();
  WatchWritable(false);
  return true;
}

bool FramedConnection::ReportClose() {
  // Off the loop first: no event reaches a connection being closed.
  loop_.Remove(fd_.get());
  fd_.Reset();
  if (handlers_.on_close) handlers_.on_close();
  return false;
}

void FramedConnection::WatchWritable(bool on) {
  if (watching_out_ == on) return;
  watching_out_ = on;
  (void)loop_.Modify(fd_.get(), EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u));
}

}  // namespace ttrpc
