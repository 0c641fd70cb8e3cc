#include "keeper/tty_relay.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/absl_fmt.h"
#include "base/log.h"

namespace keeper {

using base::LogInfo;
using base::LogWarn;

namespace {

// Reads per event and direction: a busy terminal must not starve the
// loop's other fds (epoll is level-triggered, so the rest comes next turn).
constexpr int kReadsPerEvent = 16;

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

TtyRelay::TtyRelay(base::EventLoop& loop, std::string name, base::UniqueFd master,
                   base::UniqueFd in, base::UniqueFd out)
    : loop_(loop), name_(std::move(name)) {
  master_.fd = std::move(master);
  in_.fd = std::move(in);
  out_.fd = std::move(out);
}

TtyRelay::~TtyRelay() {
  Close(master_);
  Close(in_);
  Close(out_);
}

void TtyRelay::Start() {
  for (Watched* w : {&master_, &in_, &out_})
    if (*w) SetNonBlocking(w->fd.get());
  if (!master_) in_.fd.Reset();  // nothing to copy stdin to
  Update();
}

void TtyRelay::Resize(uint32_t width, uint32_t height) {
  if (!master_) return;
  winsize ws{};
  ws.ws_col = static_cast<unsigned short>(std::min<uint32_t>(width, 0xffff));
  ws.ws_row = static_cast<unsigned short>(std::min<uint32_t>(height, 0xffff));
  if (ioctl(master_.fd.get(), TIOCSWINSZ, &ws) != 0)
    base::LogWarn("keeper: tty {}: TIOCSWINSZ: {}", name_, std::strerror(errno));
}

void TtyRelay::CloseInput() {
  if (close_input_) return;
  close_input_ = true;
  // With stdin still open, Update() reads what it holds first and then
  // closes it (CloseIn queues the VEOF).
  if (!in_) QueueEof();
  Update();
}

void TtyRelay::QueueEof() {
  if (!master_) return;
  // VEOF at the start of a line makes a canonical-mode read return 0. The
  // terminal's own character, as the program may have changed it.
  termios t{};
  char eof = '\x04';
  if (tcgetattr(master_.fd.get(), &t) == 0 && t.c_cc[VEOF] != _POSIX_VDISABLE)
    eof = static_cast<char>(t.c_cc[VEOF]);
  to_master_.push_back(eof);  // after all stdin gave: may exceed the bound by one
  WriteMaster();
}

void TtyRelay::OnMaster(uint32_t events) {
  if (events & (EPOLLOUT | EPOLLERR)) WriteMaster();
  if (master_ && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) ReadMaster();
  Update();
}

void TtyRelay::OnIn(uint32_t events) {
  ReadIn((events & (EPOLLHUP | EPOLLERR)) != 0);
  Update();
}

void TtyRelay::OnOut(uint32_t) {
  WriteOut();
  Update();
}

void TtyRelay::ReadMaster() {
  char buf[16 * 1024];
  for (int i = 0; i < kReadsPerEvent && master_ && to_out_.size() < kBufferSize; ++i) {
    ssize_t n = read(master_.fd.get(), buf, std::min(sizeof buf, kBufferSize - to_out_.size()));
    if (n > 0) {
      if (out_) to_out_.append(buf, static_cast<size_t>(n));
      WriteOut();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    MasterDone();  // EIO: no slave end is open any more
  }
}

void TtyRelay::ReadIn(bool hung_up) {
  char buf[16 * 1024];
  for (int i = 0; i < kReadsPerEvent && in_ && to_master_.size() < kBufferSize; ++i) {
    ssize_t n = read(in_.fd.get(), buf, std::min(sizeof buf, kBufferSize - to_master_.size()));
    if (n > 0) {
      to_master_.append(buf, static_cast<size_t>(n));
      WriteMaster();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // Being closed: all it held is read.
    if (n < 0 && errno == EAGAIN && !close_input_) return;
    // A fifo reads 0 also while no writer has come yet; only a hang-up
    // (the writer came and went) ends stdin.
    if (n == 0 && !hung_up && !close_input_) return;
    if (n < 0 && errno != EAGAIN)
      base::LogWarn("keeper: tty {}: reading stdin: {}", name_, std::strerror(errno));
    CloseIn();
  }
}

void TtyRelay::WriteOut() {
  while (out_ && !to_out_.empty()) {
    ssize_t n = write(out_.fd.get(), to_out_.data(), to_out_.size());
    if (n > 0) {
      to_out_.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    // Not a fifo we also read (EPIPE), a full disk: nothing will take the
    // output; drop it rather than block the program.
    base::LogWarn("keeper: tty {}: writing stdout: {}; dropping the output", name_,
            std::strerror(errno));
    to_out_.clear();
    Close(out_);
  }
}

void TtyRelay::WriteMaster() {
  while (master_ && !to_master_.empty()) {
    ssize_t n = write(master_.fd.get(), to_master_.data(), to_master_.size());
    if (n > 0) {
      to_master_.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    // EIO: the slave side is gone, the master's read says so next.
    to_master_.clear();
  }
}

void TtyRelay::MasterDone() {
  base::LogInfo("keeper: tty {}: the terminal closed; {} bytes still to write", name_, to_out_.size());
  Close(master_);
  CloseIn();
  to_master_.clear();
}

void TtyRelay::CloseIn() {
  if (!in_) return;
  Close(in_);
  if (close_input_) QueueEof();
}

void TtyRelay::Update() {
  // Closing stdin: read on without waiting for an event, which a fifo
  // whose writer is there but silent would never give.
  if (close_input_ && in_ && to_master_.size() < kBufferSize) ReadIn(false);
  if (!master_ && out_ && to_out_.empty()) Close(out_);  // the reader sees EOF now
  // A side is read only while its buffer has room: the rest waits in the
  // kernel (the pty, the fifo), and so does the writer behind it.
  Watch(master_,
        (to_out_.size() < kBufferSize ? uint32_t{EPOLLIN} : 0u) |
            (to_master_.empty() ? 0u : uint32_t{EPOLLOUT}),
        &TtyRelay::OnMaster);
  Watch(in_, to_master_.size() < kBufferSize ? uint32_t{EPOLLIN} : 0u, &TtyRelay::OnIn);
  Watch(out_, to_out_.empty() ? 0u : uint32_t{EPOLLOUT}, &TtyRelay::OnOut);
}

void TtyRelay::Watch(Watched& w, uint32_t wanted, void (TtyRelay::*handler)(uint32_t)) {
  if (!w || w.events == wanted) return;
  // Off the loop rather than registered for nothing: epoll reports EPOLLHUP
  // whatever the mask, and a paused, hung-up fd would spin the loop.
  if (wanted == 0) {
    loop_.Remove(w.fd.get());
    w.events = 0;
    return;
  }
  absl::Status st = w.events == 0
                        ? loop_.Add(w.fd.get(), wanted,
                                    [this, handler](uint32_t ev) { (this->*handler)(ev); })
                        : loop_.Modify(w.fd.get(), wanted);
  if (st.ok()) {
    w.events = wanted;
    return;
  }
  // epoll refuses regular files; they are never full, so only a write that
  // could not finish gets here: give up on that fd rather than spin.
  base::LogWarn("keeper: tty {}: cannot watch fd {}: {}; closing it", name_, w.fd.get(), st);
  if (&w == &out_) to_out_.clear();
  if (&w == &master_) {
    MasterDone();
    Update();
    return;
  }
  Close(w);
}

void TtyRelay::Close(Watched& w) {
  if (!w) return;
  if (w.events != 0) loop_.Remove(w.fd.get());
  w.events = 0;
  w.fd.Reset();
}

TtyRelay::Saved TtyRelay::Save() const {
  Saved s;
  s.name = name_;
  s.master = master_.fd.get();
  s.in = in_.fd.get();
  s.out = out_.fd.get();
  s.close_input = close_input_;
  s.to_out = to_out_;
  s.to_master = to_master_;
  return s;
}

absl::StatusOr<std::unique_ptr<TtyRelay>> TtyRelay::Restore(base::EventLoop& loop, Saved saved) {
  for (int fd : {saved.master, saved.in, saved.out}) {
    if (fd < -1 || (fd >= 0 && fcntl(fd, F_GETFD) < 0))
      return absl::InvalidArgumentError(
          fmt::format("tty {}: fd {} is not open", saved.name, fd));
  }
  for (int fd : {saved.master, saved.in, saved.out})
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for the server
  auto relay = std::make_unique<TtyRelay>(loop, std::move(saved.name),
                                          base::UniqueFd(saved.master), base::UniqueFd(saved.in),
                                          base::UniqueFd(saved.out));
  relay->close_input_ = saved.close_input;
  relay->to_out_ = std::move(saved.to_out);
  relay->to_master_ = std::move(saved.to_master);
  relay->Start();
  return relay;
}

}  // namespace keeper
