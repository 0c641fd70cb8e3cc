#include "shim/oci/runc_spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "shim/oci/spawn_util.h"

extern char** environ;
namespace shim::oci {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

}  // namespace

// Resolves the binary the way execvp would, but up front, so that a missing
// runtime is a clear error rather than an exit code from a child.
absl::StatusOr<std::string> FindBinary(const std::string& binary) {
  if (binary.find('/') != std::string::npos) {
    if (IsExecutableFile(binary)) return binary;
    return absl::FailedPreconditionError(
        fmt::format("runc binary '{}' not found or not executable", binary));
  }
  const char* path_env = std::getenv("PATH");
  std::string_view path = path_env != nullptr ? path_env : kDefaultPath;
  while (true) {
    size_t colon = path.find(':');
    std::string_view dir = path.substr(0, colon);
    std::string candidate = fmt::format("{}/{}", dir.empty() ? "." : dir, binary);
    if (IsExecutableFile(candidate)) return candidate;
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return absl::FailedPreconditionError(fmt::format("runc binary '{}' not found in PATH", binary));
}

// dup2() onto 0..2 in the child must not clobber a source that is itself
// 0..2, so every source lives at 3 or above (close-on-exec).
absl::Status MoveAbove2(base::UniqueFd& fd) {
  if (fd.get() > 2) return absl::OkStatus();
  int moved = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return base::ErrnoStatus("fcntl F_DUPFD_CLOEXEC");
  fd.Reset(moved);
  return absl::OkStatus();
}

absl::StatusOr<base::UniqueFd> OpenDevNull() {
  base::UniqueFd fd(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus("open /dev/null");
  return fd;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    // sigdescr_np, unlike strsignal, is thread-safe.
    const char* name = sigdescr_np(WTERMSIG(status));
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), name != nullptr ? name : "?");
  }
  return fmt::format("wait status {:#x}", status);
}

namespace {

// The environment minus NOTIFY_SOCKET: a runtime that sees it talks sd_notify
// to systemd on the container's behalf, which is not what the shim wants.
std::vector<std::string> ChildEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::string_view(*e).starts_with("NOTIFY_SOCKET=")) continue;
    env.emplace_back(*e);
  }
  return env;
}

// Reaps exactly our own child: the shim has no waitpid(-1) reaper, and
// another thread's children are none of our business.
absl::StatusOr<int> Reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return base::ErrnoStatus(fmt::format("waitpid {}", pid));
  }
  return status;
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);  // unreaped, so the pid cannot have been recycled
  (void)Reap(pid);
}

// Everything the child needs, prepared before vfork() or fork(): until it
// execs, the child may only make system calls (after vfork it shares our
// memory; after fork of a threaded process, locks may be held by threads
// that no longer exist).
struct ExecPlan {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  int fds[3] = {-1, -1, -1};     // become 0, 1, 2
  int close_fallback_limit = 0;  // RLIMIT_NOFILE, if close_range is missing
  volatile int exec_errno = 0;   // set by a vfork child when execve fails
  // fork() only (SpawnGated), all >= 3 and close-on-exec:
  int gate_fd = -1;   // read end: one byte = exec; EOF = give up
  int error_fd = -1;  // write end: the child's errno when it fails
};

// The kernel's sigset_t: 64 signals (every architecture but MIPS).
constexpr size_t kKernelSigsetSize = 8;

// Ends a child that could not exec, telling the parent why.
[[noreturn]] void ChildFailed(ExecPlan* plan, int err) {
  if (plan->error_fd >= 0) {
    (void)!write(plan->error_fd, &err, sizeof err);
  } else {
    plan->exec_errno = err;
  }
  _exit(127);
}

// Closes every fd from 3 up except `keep` (ascending, each >= 3 or -1).
void CloseFrom3Except(const int (&keep)[2], int fallback_limit) {
  unsigned next = 3;
  bool ok = true;
  for (int fd : keep) {
    if (fd < 3) continue;
    if (static_cast<unsigned>(fd) > next) {
      ok = ok && syscall(SYS_close_range, next, static_cast<unsigned>(fd) - 1, 0U) == 0;
    }
    next = static_cast<unsigned>(fd) + 1;
  }
  ok = ok && syscall(SYS_close_range, next, ~0U, 0U) == 0;
  if (ok) return;
  for (int fd = 3; fd < fallback_limit; ++fd) {
    if (fd != keep[0] && fd != keep[1]) close(fd);
  }
}

[[noreturn]] __attribute__((noinline)) void ExecChild(ExecPlan* plan) {
  // Every disposition back to the default. The shim ignores SIGPIPE, and
  // ignored signals survive exec, down to the container's init. Raw syscalls
  // because glibc refuses to touch its internal signals (32, 33), and
  // posix_spawn() would leave those ignored. A zeroed kernel sigaction is
  // SIG_DFL on every layout.
  const unsigned char sig_default[64] = {};
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, sig_default, nullptr, kKernelSigsetSize);
  }
  for (int i = 0; i < 3; ++i) {
    if (dup2(plan->fds[i], i) < 0) ChildFailed(plan, errno);
  }
  // Only 0..2 are inherited, even fds another thread opened without
  // O_CLOEXEC. Done before the gate, so that a child held there keeps no
  // other call's fds (pipe ends whose EOF someone waits for) open.
  const int keep[2] = {std::min(plan->gate_fd, plan->error_fd),
                       std::max(plan->gate_fd, plan->error_fd)};
  CloseFrom3Except(keep, plan->close_fallback_limit);
  if (plan->gate_fd >= 0) {
    char go = 0;
    ssize_t n;
    do {
      n = read(plan->gate_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) _exit(127);  // the parent gave up on us (and kills us)
  }
  // Unblocked last, once no handler of ours can run here.
  const uint64_t no_signals = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &no_signals, nullptr, kKernelSigsetSize);
  execve(plan->path, plan->argv, plan->envp);
  ChildFailed(plan, errno);
}

// vfork(): no copy of the shim's page tables, and the parent learns about a
// failed exec through the shared ExecPlan. All signals stay blocked around
// it so that no handler of the shim runs in the child.
absl::StatusOr<pid_t> Spawn(ExecPlan& plan, std::string_view what) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = vfork();
  if (pid == 0) ExecChild(&plan);
  const int vfork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return base::ErrnoStatus(fmt::format("{}: vfork", what), vfork_errno);
  return pid;
}

struct Pipe {
  base::UniqueFd read, write;
};

// A close-on-exec pipe whose ends are both >= 3, so the child's dup2()s onto
// 0..2 cannot hit them.
absl::StatusOr<Pipe> MakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe2");
  Pipe p{base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
  if (absl::Status s = MoveAbove2(p.read); !s.ok()) return s;
  if (absl::Status s = MoveAbove2(p.write); !s.ok()) return s;
  return p;
}

// fork(), for when `hook` must run after the child exists and before it
// execs: vfork() would suspend us until the exec. The child waits at a gate
// pipe; a failed exec reports its errno through a second pipe, whose EOF
// (close-on-exec) means the exec happened. The hook's error is returned as
// it is.
absl::StatusOr<pid_t> SpawnGated(ExecPlan& plan, const SpawnHook& hook, std::string_view what) {
  auto prefixed = [what](const absl::Status& s) {
    return absl::Status(s.code(), fmt::format("{}: {}", what, s.message()));
  };
  absl::StatusOr<Pipe> gate = MakePipe();
  if (!gate.ok()) return prefixed(gate.status());
  absl::StatusOr<Pipe> error = MakePipe();
  if (!error.ok()) return prefixed(error.status());
  plan.gate_fd = gate->read.get();
  plan.error_fd = error->write.get();

  absl::StatusOr<pid_t> forked = ForkSignalsBlocked(what, [&plan] { ExecChild(&plan); });
  if (!forked.ok()) return forked.status();
  const pid_t pid = *forked;
  gate->read.Reset();
  error->write.Reset();

  if (absl::Status s = hook(pid); !s.ok()) {
    KillAndReap(pid);
    return s;
  }
  ssize_t n;
  do {
    n = write(gate->write.get(), "x", 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    absl::Status s = prefixed(base::ErrnoStatus("write to the spawn gate"));
    KillAndReap(pid);
    return s;
  }
  gate->write.Reset();
  int child_errno = 0;
  do {
    n = read(error->read.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof child_errno) plan.exec_errno = child_errno;
  return pid;
}

}  // namespace

// Spawns `path` with `argv` and the given fds 0..2 and waits for it to exit,
// at most `timeout`; returns its wait status. No parent-death signal: the
// runtime must finish even if the shim dies meanwhile.
absl::StatusOr<int> SpawnAndWait(const std::string& path, std::vector<std::string> argv,
                                 const int (&fds)[3], std::chrono::milliseconds timeout,
                                 std::string_view what, const SpawnHook* on_spawned) {
  std::vector<std::string> env = ChildEnvironment();
  std::vector<char*> argv_c = CStrings(argv);
  std::vector<char*> env_c = CStrings(env);
  ExecPlan plan;
  plan.path = path.c_str();
  plan.argv = argv_c.data();
  plan.envp = env_c.data();
  std::copy(std::begin(fds), std::end(fds), plan.fds);
  struct rlimit nofile;
  plan.close_fallback_limit = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < INT_MAX
                                  ? static_cast<int>(nofile.rlim_cur)
                                  : 1024;

  const Clock::time_point deadline = Clock::now() + timeout;
  absl::StatusOr<pid_t> spawned =
      on_spawned != nullptr ? SpawnGated(plan, *on_spawned, what) : Spawn(plan, what);
  if (!spawned.ok()) return spawned.status();
  const pid_t pid = *spawned;
  if (const int err = plan.exec_errno; err != 0) {
    (void)Reap(pid);
    if (err == ENOENT || err == EACCES || err == ENOEXEC) {
      return absl::FailedPreconditionError(
          fmt::format("{}: cannot execute '{}': {}", what, path, std::strerror(err)));
    }
    return base::ErrnoStatus(fmt::format("{}: starting {}", what, path), err);
  }

  // Our child is not reaped until we reap it, so the pidfd names it for sure.
  base::UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    absl::Status s = base::ErrnoStatus(fmt::format("{}: pidfd_open", what));
    KillAndReap(pid);
    return s;
  }
  while (true) {
    pollfd p{.fd = pidfd.get(), .events = POLLIN, .revents = 0};
    int n = poll(&p, 1, MillisUntil(deadline));
    if (n > 0) break;
    if (n < 0 && errno != EINTR) {
      absl::Status s = base::ErrnoStatus(fmt::format("{}: poll pidfd", what));
      KillAndReap(pid);
      return s;
    }
    if (n == 0 && Clock::now() >= deadline) {
      KillAndReap(pid);
      return absl::DeadlineExceededError(
          fmt::format("{}: still running after {} ms; killed", what, timeout.count()));
    }
  }
  return Reap(pid);
}

}  // namespace shim::oci
