// FramedConnection: a connected stream socket on an EventLoop that carries
// whole ttrpc frames. Bytes read are cut into frames (header and payload as
// they arrived) for on_frame; frames to send are queued and written as the
// socket takes them; the end of the connection is reported once.
//
// Protobuf-free: the keeper holds containerd's connections with it, and
// tests drive the ttrpc server over a socket with it.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "ttrpc/frame.h"

namespace ttrpc {

class FramedConnection {
 public:
  struct Handlers {
    // A whole frame; an oversized one (longer than max_message_size) comes
    // with its header only and its payload is skipped.
    std::function<void(Frame frame)> on_frame;
    // The peer left, a read or write failed, or the frames queued before
    // CloseAfterFlush() are written. Called once; the owner may destroy the
    // connection inside it. Not called for a connection destroyed first.
    std::function<void()> on_close;
  };

  // Puts `fd` on the loop (nonblocking). `unsent` and `partial` continue
  // what an earlier holder of the socket left: bytes still to write, and
  // the start of an unfinished frame (FrameDecoder::Buffered()).
  static absl::StatusOr<std::unique_ptr<FramedConnection>> Create(
      base::EventLoop& loop, base::UniqueFd fd, uint32_t max_message_size, Handlers handlers,
      std::string unsent = {}, std::string_view partial = {});
  ~FramedConnection();  // off the loop, closed; on_close is not called
  FramedConnection(const FramedConnection&) = delete;
  FramedConnection& operator=(const FramedConnection&) = delete;

  // Queues one whole frame (or several). A write error reports the close.
  void Send(std::string_view frames);
  // Delivers no more frames; reports the close once the queue is written.
  void CloseAfterFlush();
  bool closing() const { return closing_; }

  int fd() const { return fd_.get(); }
  // The peer's credentials (SO_PEERCRED), read when created.
  const ucred& peer() const { return peer_; }
  // For a handover (the keeper's upgrade): bytes not yet written, and the
  // unfinished frame read so far.
  const std::string& unsent() const { return out_; }
  std::string partial() const { return decoder_.Buffered(); }

 private:
  FramedConnection(base::EventLoop& loop, base::UniqueFd fd, uint32_t max_message_size,
                   Handlers handlers);
  void OnEvents(uint32_t events);
  // Each returns false once the close was reported (`this` may be gone).
  bool Read();
  bool Flush();
  bool ReportClose();
  void WatchWritable(bool on);

  base::EventLoop& loop_;
  base::UniqueFd fd_;
  ucred peer_{};
  FrameDecoder decoder_;
  Handlers handlers_;
  std::string out_;  // bytes not yet written
  bool closing_ = false;
  bool watching_out_ = false;
  // Cleared by the destructor: a callback that destroyed us is noticed.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ttrpc
