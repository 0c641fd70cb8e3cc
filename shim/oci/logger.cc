#include "shim/oci/logger.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "shim/oci/spawn_util.h"

namespace shim::oci {
namespace {

using Clock = std::chrono::steady_clock;

// The kernel's sigset_t: 64 signals (every architecture but MIPS).
constexpr size_t kKernelSigsetSize = 8;

// The fds the logger gets, by number: 0..2 /dev/null, 3..5 the convention's;
// 6 and 7 are ours (close-on-exec) until it execs.
constexpr int kGateFd = 6;   // one byte: exec; EOF: give up
constexpr int kErrorFd = 7;  // the child's errno if it cannot exec
constexpr int kChildFds = 8;

// Everything the logger's process needs, prepared before fork(): after a
// fork of a threaded process the child may only make system calls.
struct Plan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  int fds[kChildFds] = {};  // become 0 .. kChildFds-1
  int report_fd = -1;       // the intermediate writes the logger's pid here
};

[[noreturn]] void LoggerFailed(int err) {
  (void)!write(kErrorFd, &err, sizeof err);
  _exit(127);
}

// The logger, before exec: a session of its own (the server's process group
// may be signalled; its logger must outlive that), default signal
// dispositions (the shim ignores SIGPIPE), exactly fds 0..5.
[[noreturn]] void LoggerChild(const Plan* plan) {
  setsid();
  const unsigned char sig_default[64] = {};  // a zeroed kernel sigaction is SIG_DFL
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, sig_default, nullptr, kKernelSigsetSize);
  }
  // Above every fd we have first, so that no dup2() below hits a source.
  int high[kChildFds];
  for (int i = 0; i < kChildFds; ++i) {
    high[i] = fcntl(plan->fds[i], F_DUPFD, 64);
    if (high[i] < 0) _exit(126);  // no error fd yet; the parent sees EOF on it
  }
  for (int i = 0; i < kChildFds; ++i) {
    if (dup2(high[i], i) < 0) _exit(126);
  }
  fcntl(kGateFd, F_SETFD, FD_CLOEXEC);
  fcntl(kErrorFd, F_SETFD, FD_CLOEXEC);
  // Nothing else: another container's pipe end inherited here would keep
  // its logger from ever seeing EOF.
  if (syscall(SYS_close_range, static_cast<unsigned>(kChildFds), ~0U, 0U) != 0) {
    for (int fd = kChildFds; fd < 65536; ++fd) close(fd);
  }
  char go = 0;
  ssize_t n;
  do {
    n = read(kGateFd, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) _exit(127);  // the parent gave up on us
  const uint64_t no_signals = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &no_signals, nullptr, kKernelSigsetSize);
  execve(plan->path, plan->argv, plan->envp);
  LoggerFailed(errno);
}

// The intermediate process: forks the logger and leaves, so that the logger
// is reparented at once and is never the server's child (nor its zombie).
[[noreturn]] void Intermediate(const Plan* plan) {
  const pid_t pid = fork();
  if (pid == 0) LoggerChild(plan);
  const int value = pid > 0 ? pid : -errno;
  (void)!write(plan->report_fd, &value, sizeof value);
  _exit(0);
}

struct Pipe {
  base::UniqueFd read, write;
};

absl::StatusOr<Pipe> MakePipe(std::string_view what) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return base::ErrnoStatus(fmt::format("pipe for {}", what));
  return Pipe{base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
}

// Whether `fd` turns readable (or hangs up) within `timeout`.
bool WaitReadable(int fd, std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int n = poll(&p, 1, MillisUntil(deadline));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
    if (n == 0 && Clock::now() >= deadline) return false;
  }
}

ssize_t ReadRetrying(int fd, void* buf, size_t len) {
  ssize_t n;
  do {
    n = read(fd, buf, len);
  } while (n < 0 && errno == EINTR);
  return n;
}

void Kill(const base::UniqueFd& pidfd) {
  syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
}

}  // namespace

absl::StatusOr<LoggerCommand> LoggerCommandOf(const StdioUri& uri) {
  if (uri.path.empty() || uri.path.front() != '/')
    return absl::InvalidArgumentError(
        fmt::format("binary:// logger '{}': want an absolute path", uri.path));
  LoggerCommand command{uri.path, {}};
  // As url.Values: each key once, with its first value.
  std::vector<std::string_view> seen;
  for (const auto& [key, value] : uri.query) {
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
    seen.push_back(key);
    command.args.push_back(key);
    command.args.push_back(value);
  }
  return command;
}

absl::StatusOr<StartedLogger> StartLogger(const LoggerCommand& command,
                                          const LoggerOptions& options) {
  const std::string what = fmt::format("logger {}", command.path);
  auto failed = [&what](const absl::Status& s) {
    return absl::Status(s.code(), fmt::format("{}: {}", what, s.message()));
  };
  std::vector<std::string> argv = {command.path};
  argv.insert(argv.end(), command.args.begin(), command.args.end());
  std::vector<std::string> env = {"CONTAINER_ID=" + options.id,
                                  "CONTAINER_NAMESPACE=" + options.ns};
  std::vector<char*> argv_c = CStrings(argv);
  std::vector<char*> env_c = CStrings(env);

  base::UniqueFd null(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null) return failed(base::ErrnoStatus("open /dev/null"));
  absl::StatusOr<Pipe> out = MakePipe("stdout"), err = MakePipe("stderr"),
                       ready = MakePipe("ready"), gate = MakePipe("gate"),
                       error = MakePipe("exec errors"), report = MakePipe("its pid");
  for (const auto* p : {&out, &err, &ready, &gate, &error, &report})
    if (!p->ok()) return failed(p->status());
  // Owned by io_uid/io_gid, as runc-v2's pipes: a pipe is one inode, so
  // this is what a reopen of /proc/self/fd/1 in the container checks.
  if (options.io_uid != 0 || options.io_gid != 0) {
    for (const auto* p : {&out, &err})
      if (fchown((*p)->write.get(), options.io_uid, options.io_gid) != 0)
        return failed(base::ErrnoStatus(
            fmt::format("chown of its pipe to {}:{}", options.io_uid, options.io_gid)));
  }

  Plan plan;
  plan.path = command.path.c_str();
  plan.argv = argv_c.data();
  plan.envp = env_c.data();
  const int fds[kChildFds] = {null.get(),         null.get(),         null.get(),
                              out->read.get(),    err->read.get(),    ready->write.get(),
                              gate->read.get(),   error->write.get()};
  std::copy(std::begin(fds), std::end(fds), plan.fds);
  plan.report_fd = report->write.get();

  // The logger unblocks the signals just before it execs.
  absl::StatusOr<pid_t> intermediate =
      ForkSignalsBlocked("logger", [&plan] { Intermediate(&plan); });
  if (!intermediate.ok()) return failed(intermediate.status());
  int status = 0;
  while (waitpid(*intermediate, &status, 0) < 0 && errno == EINTR) {
  }
  // The logger has its own copies now; ours would hide its EOFs.
  report->write.Reset();
  out->read.Reset();
  err->read.Reset();
  ready->write.Reset();
  gate->read.Reset();
  error->write.Reset();
  null.Reset();

  int value = 0;
  if (ReadRetrying(report->read.get(), &value, sizeof value) != sizeof value)
    return failed(absl::InternalError("the intermediate process did not report a pid"));
  if (value <= 0) return failed(base::ErrnoStatus("fork", -value));
  StartedLogger logger;
  logger.pid = value;
  // The logger waits at its gate, alive: the pid names it for sure.
  logger.pidfd.Reset(static_cast<int>(syscall(SYS_pidfd_open, logger.pid, 0)));
  if (!logger.pidfd) return failed(base::ErrnoStatus(fmt::format("pidfd_open {}", logger.pid)));
  if (write(gate->write.get(), "x", 1) != 1) {
    absl::Status s = failed(base::ErrnoStatus("write to its gate"));
    Kill(logger.pidfd);
    return s;
  }
  gate->write.Reset();
  int child_errno = 0;
  const ssize_t got = ReadRetrying(error->read.get(), &child_errno, sizeof child_errno);
  if (got == sizeof child_errno) {
    if (child_errno == ENOENT || child_errno == EACCES || child_errno == ENOEXEC)
      return absl::FailedPreconditionError(
          fmt::format("{}: cannot execute: {}", what, std::strerror(child_errno)));
    return failed(base::ErrnoStatus("exec", child_errno));
  }
  if (got != 0) return failed(absl::InternalError("the logger failed before it could exec"));

  // Ready: a byte or EOF on fd 5, as runc-v2 reads it; bounded here.
  if (!WaitReadable(ready->read.get(), options.ready_timeout)) {
    Kill(logger.pidfd);
    return absl::DeadlineExceededError(fmt::format(
        "{}: not ready after {} ms (it must write to or close fd 5); killed", what,
        options.ready_timeout.count()));
  }
  char byte;
  (void)ReadRetrying(ready->read.get(), &byte, 1);
  pollfd p{logger.pidfd.get(), POLLIN, 0};
  if (poll(&p, 1, 0) == 1)
    return absl::FailedPreconditionError(
        fmt::format("{}: exited before it was ready to read the container's output", what));
  logger.out = std::move(out->write);
  logger.err = std::move(err->write);
  return logger;
}

absl::StatusOr<LoggerEnd> StopLogger(const base::UniqueFd& pidfd, LoggerStopLimits limits) {
  if (WaitReadable(pidfd.get(), limits.grace)) return LoggerEnd::kExited;
  syscall(SYS_pidfd_send_signal, pidfd.get(), SIGTERM, nullptr, 0);
  if (WaitReadable(pidfd.get(), limits.term)) return LoggerEnd::kTerminated;
  Kill(pidfd);
  if (WaitReadable(pidfd.get(), std::chrono::seconds(5))) return LoggerEnd::kKilled;
  return absl::DeadlineExceededError("the logger is still there 5 s after SIGKILL");
}

}  // namespace shim::oci
