// Helpers for driving ttrpc code from tests: a loop on its own thread, and a
// raw socket end that reads and writes frames with a deadline.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <future>
#include <thread>
#include <utility>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "ttrpc/frame.h"

namespace test {

class LoopThread {
 public:
  LoopThread() : loop_(std::move(*base::EventLoop::Create())) {
    thread_ = std::thread([this] { loop_->Run(); });
    Sync([] {});  // the loop now runs on its thread
  }
  ~LoopThread() {
    loop_->Stop();
    thread_.join();
  }
  base::EventLoop& loop() { return *loop_; }

  // Runs fn on the loop thread and returns its result.
  template <class F>
  auto Sync(F fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    loop_->Post([&task] { task(); });
    return result.get();
  }

 private:
  std::unique_ptr<base::EventLoop> loop_;
  std::thread thread_;
};

inline std::pair<base::UniqueFd, base::UniqueFd> SocketPair() {
  int fds[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
  return {base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
}

inline void WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads one frame, waiting at most `timeout_ms`. nullopt on EOF or timeout.
inline std::optional<ttrpc::Frame> ReadFrame(int fd, int timeout_ms = 10000,
                                             bool* eof = nullptr) {
  ttrpc::FrameDecoder d(UINT32_MAX);
  char buf[65536];
  // Read the header first, then exactly the payload, so no bytes of a later
  // frame are consumed.
  std::string got;
  size_t want = ttrpc::kHeaderSize;
  while (got.size() < want) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
    ssize_t n = read(fd, buf, std::min(sizeof buf, want - got.size()));
    if (n <= 0) {
      if (eof) *eof = true;
      return std::nullopt;
    }
    got.append(buf, static_cast<size_t>(n));
    if (got.size() == ttrpc::kHeaderSize && want == ttrpc::kHeaderSize)
      want += ttrpc::DecodeHeader(got.data()).length;
  }
  d.Feed(got);
  return d.Next();
}

// True if the peer closed `fd` (EOF) within the timeout.
inline bool WaitEof(int fd, int timeout_ms = 10000) {
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

}  // namespace test
