#include "test/integration/pty_session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "base/errno_status.h"
#include "fmt/format.h"

extern char** environ;

namespace pty_test {

using test_support::Clock;
using test_support::Deadline;
using test_support::ExitStatus;

namespace {

int MillisUntil(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left.count() + 1, INT_MAX));
}

std::string Tail(const std::string& s, size_t n = 2000) {
  return s.size() > n ? "..." + s.substr(s.size() - n) : s;
}

// The child's side after fork(): only async-signal-safe calls. Reports
// nothing back: a failed exec shows as exit code 127 and an empty transcript.
[[noreturn]] void RunChild(const char* slave_path, pid_t parent, const char* exe,
                           char* const* argv, char* const* envp) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
  test_support::ResetSignalsInChild();
  // A new session; opening the slave then makes it the controlling terminal.
  if (setsid() < 0) _exit(127);
  int slave = open(slave_path, O_RDWR);
  if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(127);
  for (int fd = 0; fd <= 2; ++fd) {
    if (dup2(slave, fd) < 0) _exit(127);
  }
  syscall(SYS_close_range, 3u, ~0u, 0u);
  execve(exe, argv, envp);
  _exit(127);
}

}  // namespace

std::string StripCarriageReturns(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c != '\r') out += c;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<PtySession>> PtySession::Spawn(std::vector<std::string> argv,
                                                              WindowSize size) {
  if (argv.empty()) return absl::InvalidArgumentError("PtySession::Spawn: empty argv");
  base::UniqueFd master(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
  if (!master) return base::ErrnoStatus("posix_openpt");
  if (grantpt(master.get()) != 0) return base::ErrnoStatus("grantpt");
  if (unlockpt(master.get()) != 0) return base::ErrnoStatus("unlockpt");
  char name[128];
  if (int e = ptsname_r(master.get(), name, sizeof name); e != 0)
    return base::ErrnoStatus("ptsname_r", e);
  const std::string slave_path = name;
  winsize ws{};
  ws.ws_row = size.rows;
  ws.ws_col = size.cols;
  if (ioctl(master.get(), TIOCSWINSZ, &ws) != 0) return base::ErrnoStatus("TIOCSWINSZ");

  // Prepared before fork(): the child may not allocate.
  std::unique_ptr<PtySession> s(new PtySession());
  for (const std::string& a : argv) s->description_ += (s->description_.empty() ? "" : " ") + a;
  std::vector<char*> argv_c;
  for (std::string& a : argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("CONTAINERD_NAMESPACE=") || v.starts_with("CONTAINERD_ADDRESS=")) continue;
    env.emplace_back(v);
  }
  std::vector<char*> env_c;
  for (std::string& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);
  const char* path_env = getenv("PATH");
  absl::StatusOr<std::string> exe =
      test_support::FindInPath(argv[0], path_env ? path_env : "/usr/bin:/bin");
  if (!exe.ok()) return exe.status();
  const pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) return base::ErrnoStatus("fork");
  if (pid == 0) RunChild(slave_path.c_str(), parent, exe->c_str(), argv_c.data(), env_c.data());
  s->pid_ = pid;
  s->pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!s->pidfd_) return base::ErrnoStatus("pidfd_open");  // ~PtySession kills it
  s->master_ = std::move(master);
  return s;
}

PtySession::~PtySession() {
  if (pid_ <= 0 || status_.has_value()) return;
  kill(-pid_, SIGKILL);  // its session's group (pid == pgid; not reaped yet, so not reused)
  if (pidfd_) syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  (void)Reap();
}

absl::Status PtySession::Type(std::string_view keys, Deadline deadline) {
  while (!keys.empty()) {
    ssize_t n = write(master_.get(), keys.data(), keys.size());
    if (n > 0) {
      keys.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return base::ErrnoStatus("write to the pty");
    if (Clock::now() >= deadline)
      return absl::DeadlineExceededError(fmt::format("{} bytes not taken by the pty", keys.size()));
    // Keep reading meanwhile: the child may be blocked writing to us.
    pollfd p[2] = {{master_.get(), POLLOUT | POLLIN, 0}, {pidfd_.get(), POLLIN, 0}};
    if (poll(p, 2, MillisUntil(deadline)) > 0) {
      if (p[1].revents != 0) return absl::FailedPreconditionError(description_ + " exited");
      if (p[0].revents & POLLIN) (void)ReadSome(Clock::now());
    }
  }
  return absl::OkStatus();
}

absl::Status PtySession::Resize(WindowSize size) {
  winsize ws{};
  ws.ws_row = size.rows;
  ws.ws_col = size.cols;
  if (ioctl(master_.get(), TIOCSWINSZ, &ws) != 0) return base::ErrnoStatus("TIOCSWINSZ");
  return absl::OkStatus();
}

bool PtySession::ReadSome(Deadline deadline) {
  if (master_eof_) return false;
  pollfd p{master_.get(), POLLIN, 0};
  int r = poll(&p, 1, MillisUntil(deadline));
  if (r <= 0) return true;  // nothing yet (or EINTR): the caller checks its deadline
  char buf[65536];
  for (;;) {
    ssize_t n = read(master_.get(), buf, sizeof buf);
    if (n > 0) {
      transcript_.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    master_eof_ = true;  // EIO: no process has the slave open any more
    return false;
  }
}

absl::StatusOr<size_t> PtySession::WaitFor(std::string_view text, Deadline deadline,
                                           size_t from) {
  size_t scan_from = from;  // no match starts before it: megabytes are scanned once
  for (;;) {
    size_t at = transcript_.find(text, std::min(scan_from, transcript_.size()));
    if (at != std::string::npos) return at + text.size();
    if (transcript_.size() >= text.size())
      scan_from = std::max(scan_from, transcript_.size() - text.size() + 1);
    if (master_eof_)
      return absl::FailedPreconditionError(fmt::format(
          "{:?} not seen before the terminal closed; transcript:\n{}", text, Tail(transcript_)));
    if (Clock::now() >= deadline)
      return absl::DeadlineExceededError(fmt::format(
          "{:?} not seen by the deadline; transcript:\n{}", text, Tail(transcript_)));
    // A child that exited leaves the master at EOF once drained, so this
    // loop ends; a child that lives on keeps it open until the deadline.
    (void)ReadSome(deadline);
  }
}

absl::StatusOr<ExitStatus> PtySession::Wait(Deadline deadline) {
  if (status_.has_value()) return *status_;
  for (;;) {
    pollfd p[2] = {{pidfd_.get(), POLLIN, 0}, {master_.get(), POLLIN, 0}};
    int n = master_eof_ ? 1 : 2;
    int r = poll(p, static_cast<nfds_t>(n), MillisUntil(deadline));
    if (r < 0 && errno != EINTR) return base::ErrnoStatus("poll");
    if (n == 2 && p[1].revents != 0) (void)ReadSome(Clock::now());
    if (p[0].revents != 0) {
      (void)ReadSome(Clock::now());  // what it wrote last
      return Reap();
    }
    if (Clock::now() >= deadline)
      return absl::DeadlineExceededError(fmt::format(
          "{} still running; transcript:\n{}", description_, Tail(transcript_)));
  }
}

absl::StatusOr<ExitStatus> PtySession::Reap() {
  if (status_.has_value()) return *status_;
  absl::StatusOr<ExitStatus> st = test_support::ReapChild(pid_, description_);
  status_ = st.ok() ? *st : ExitStatus{-1, 0};
  return st;
}

}  // namespace pty_test
