#include "shim/oci/runc.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "shim/oci/spawn_util.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace shim::oci {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// Only the tail of a failed call's log entries is searched: the last error
// is what matters, and a runaway log must not cost the shim memory.
constexpr off_t kMaxLogTail = 1 << 20;

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

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

// Captured output goes to a memfd, not a pipe: the child can never block on
// a full pipe, and there is no reading loop to run while waiting.
absl::StatusOr<base::UniqueFd> CaptureFile(const char* name) {
  base::UniqueFd fd(memfd_create(name, MFD_CLOEXEC));
  if (!fd) return base::ErrnoStatus("memfd_create");
  return fd;
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoStatus("write runtime input");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::string ReadFrom(int fd, off_t offset) {
  std::string out;
  char buf[16384];
  while (true) {
    ssize_t n = pread(fd, buf, sizeof buf, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    offset += n;
  }
  return out;
}

off_t FileSize(const std::string& path) {
  struct stat st;
  if (path.empty() || stat(path.c_str(), &st) != 0) return 0;
  return st.st_size;
}

// What the runtime appended to its log since `offset`, at most kMaxLogTail.
std::string ReadLogSince(const std::string& path, off_t offset) {
  if (path.empty()) return {};
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return {};
  if (st.st_size < offset) offset = 0;  // truncated or replaced meanwhile
  offset = std::max(offset, st.st_size - kMaxLogTail);
  return ReadFrom(fd.get(), offset);
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

// A file of ours in RuntimeTempDir(), removed when this goes away.
class TempFile {
 public:
  static absl::StatusOr<TempFile> Write(std::string_view prefix, std::string_view content) {
    std::string path = fmt::format("{}/{}XXXXXX", RuntimeTempDir(), prefix);
    base::UniqueFd fd(mkostemp(path.data(), O_CLOEXEC));  // mode 0600
    if (!fd) return base::ErrnoStatus(fmt::format("create {}", path));
    TempFile file(std::move(path));
    while (!content.empty()) {
      ssize_t n = write(fd.get(), content.data(), content.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return base::ErrnoStatus(fmt::format("write {}", file.path_));
      content.remove_prefix(static_cast<size_t>(n));
    }
    return file;
  }
  TempFile(TempFile&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempFile& operator=(TempFile&&) = delete;
  ~TempFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace

Runc::Runc(RuncConfig config) : config_(std::move(config)) {
  if (config_.binary.empty()) config_.binary = "runc";
}

absl::StatusOr<std::string> Runc::Run(std::string_view command,
                                      const std::vector<std::string>& args, ChildStdio* stdio,
                                      const SpawnHook* on_spawned, std::string_view input) const {
  const std::string what = fmt::format("{} {}", BaseName(config_.binary), command);
  absl::StatusOr<std::string> path = FindBinary(config_.binary);
  if (!path.ok()) return path.status();

  std::vector<std::string> argv = {config_.binary};
  if (!config_.root.empty()) argv.insert(argv.end(), {"--root", config_.root});
  if (!config_.log_path.empty()) {
    argv.insert(argv.end(), {"--log", config_.log_path, "--log-format", "json"});
  }
  if (config_.systemd_cgroup) argv.push_back("--systemd-cgroup");
  if (!config_.criu.empty()) argv.insert(argv.end(), {"--criu", config_.criu});
  argv.emplace_back(command);
  argv.insert(argv.end(), args.begin(), args.end());

  // fds 0..2 for the child: the caller's stdio (create), or /dev/null in and
  // captured out/err.
  base::UniqueFd child_fds[3];
  base::UniqueFd out_capture, err_capture;
  if (stdio != nullptr) {
    child_fds[0] = std::move(stdio->in);
    child_fds[1] = std::move(stdio->out);
    child_fds[2] = std::move(stdio->err);
  } else {
    absl::StatusOr<base::UniqueFd> out = CaptureFile("runc-stdout");
    if (!out.ok()) return out.status();
    absl::StatusOr<base::UniqueFd> err = CaptureFile("runc-stderr");
    if (!err.ok()) return err.status();
    out_capture = std::move(*out);
    err_capture = std::move(*err);
    child_fds[1].Reset(fcntl(out_capture.get(), F_DUPFD_CLOEXEC, 3));
    child_fds[2].Reset(fcntl(err_capture.get(), F_DUPFD_CLOEXEC, 3));
    if (!child_fds[1] || !child_fds[2]) return base::ErrnoStatus("fcntl F_DUPFD_CLOEXEC");
    if (!input.empty()) {
      // A memfd, not a pipe: no writer to keep alive, no size limit.
      absl::StatusOr<base::UniqueFd> in = CaptureFile("runc-stdin");
      if (!in.ok()) return in.status();
      if (absl::Status s = WriteAll(in->get(), input); !s.ok()) return s;
      if (lseek(in->get(), 0, SEEK_SET) != 0) return base::ErrnoStatus("lseek runc-stdin");
      child_fds[0] = std::move(*in);
    }
  }
  for (base::UniqueFd& fd : child_fds) {
    if (!fd) {
      absl::StatusOr<base::UniqueFd> null = OpenDevNull();
      if (!null.ok()) return null.status();
      fd = std::move(*null);
    }
    if (absl::Status s = MoveAbove2(fd); !s.ok()) return s;
  }
  const int fds[3] = {child_fds[0].get(), child_fds[1].get(), child_fds[2].get()};

  // Only log entries written by this call explain its failure.
  const off_t log_offset = FileSize(config_.log_path);
  absl::StatusOr<int> status =
      SpawnAndWait(*path, std::move(argv), fds, config_.timeout, what, on_spawned);
  if (!status.ok()) return status.status();

  std::string out = out_capture ? ReadFrom(out_capture.get(), 0) : std::string();
  if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) return out;

  std::string message = LastLogError(ReadLogSince(config_.log_path, log_offset));
  if (message.empty() && err_capture) message = TrimSpace(ReadFrom(err_capture.get(), 0));
  if (message.empty()) message = DescribeWaitStatus(*status);
  return RuntimeError(what, message);
}

absl::Status Runc::Create(const std::string& id, const std::string& bundle,
                          const CreateOptions& options, ChildStdio stdio) const {
  std::vector<std::string> args = {"--bundle", bundle, "--pid-file", options.pid_file};
  if (!options.console_socket.empty()) {
    args.insert(args.end(), {"--console-socket", options.console_socket});
  }
  if (options.no_pivot) args.push_back("--no-pivot");
  if (options.no_new_keyring) args.push_back("--no-new-keyring");
  args.push_back(id);
  return Run("create", args, &stdio, options.on_spawned ? &options.on_spawned : nullptr).status();
}

absl::Status Runc::Create(const std::string& id, const std::string& bundle,
                          const std::string& pid_file, ChildStdio stdio, bool no_pivot,
                          bool no_new_keyring) const {
  CreateOptions options;
  options.pid_file = pid_file;
  options.no_pivot = no_pivot;
  options.no_new_keyring = no_new_keyring;
  return Create(id, bundle, options, std::move(stdio));
}

absl::Status Runc::Exec(const std::string& id, const ExecOptions& options,
                        ChildStdio stdio) const {
  // runc reads it before it starts the process, so it can go when runc has
  // returned.
  absl::StatusOr<TempFile> process = TempFile::Write("runc-process", options.process_json);
  if (!process.ok()) {
    return absl::Status(process.status().code(),
                        fmt::format("{} exec: {}", BaseName(config_.binary),
                                    process.status().message()));
  }
  std::vector<std::string> args = {"--process", process->path()};
  if (!options.console_socket.empty()) {
    args.insert(args.end(), {"--console-socket", options.console_socket});
  }
  args.insert(args.end(), {"--detach", "--pid-file", options.pid_file, id});
  return Run("exec", args, &stdio, options.on_spawned ? &options.on_spawned : nullptr).status();
}

absl::Status Runc::Start(const std::string& id) const {
  return Run("start", {id}, nullptr).status();
}

absl::Status Runc::Kill(const std::string& id, int signal, bool all) const {
  std::vector<std::string> args;
  if (all) args.push_back("--all");
  args.push_back(id);
  args.push_back(std::to_string(signal));
  return Run("kill", args, nullptr).status();
}

absl::Status Runc::Delete(const std::string& id, bool force) const {
  std::vector<std::string> args;
  if (force) args.push_back("--force");
  args.push_back(id);
  return Run("delete", args, nullptr).status();
}

absl::Status Runc::Pause(const std::string& id) const { return Run("pause", {id}, nullptr).status(); }

absl::Status Runc::Resume(const std::string& id) const {
  return Run("resume", {id}, nullptr).status();
}

absl::StatusOr<std::string> Runc::Features() const { return Run("features", {}, nullptr); }

absl::StatusOr<std::vector<pid_t>> Runc::Ps(const std::string& id) const {
  absl::StatusOr<std::string> out = Run("ps", {"--format", "json", id}, nullptr);
  if (!out.ok()) return out.status();
  absl::StatusOr<std::vector<pid_t>> pids = ParsePsJson(*out);
  if (!pids.ok()) {
    return absl::UnknownError(
        fmt::format("{} ps: {}", BaseName(config_.binary), pids.status().message()));
  }
  return pids;
}

namespace {
// runc's CRIU flags, shared by checkpoint and restore (go-runc's order).
void AppendCriuArgs(const CriuOptions& o, std::vector<std::string>& args) {
  args.insert(args.end(), {"--image-path", o.image_path});
  if (!o.work_path.empty()) args.insert(args.end(), {"--work-path", o.work_path});
  if (!o.parent_path.empty()) args.insert(args.end(), {"--parent-path", o.parent_path});
  if (o.tcp_established) args.push_back("--tcp-established");
  if (o.ext_unix_sk) args.push_back("--ext-unix-sk");
  if (o.shell_job) args.push_back("--shell-job");
  if (!o.manage_cgroups_mode.empty())
    args.insert(args.end(), {"--manage-cgroups-mode", o.manage_cgroups_mode});
  if (o.file_locks) args.push_back("--file-locks");
  for (const std::string& ns : o.empty_namespaces) args.insert(args.end(), {"--empty-ns", ns});
}
}  // namespace

absl::Status Runc::Checkpoint(const std::string& id, const CheckpointOptions& options) const {
  std::vector<std::string> args;
  AppendCriuArgs(options.criu, args);
  if (options.leave_running) args.push_back("--leave-running");
  args.push_back(id);
  return CriuFailure(Run("checkpoint", args, nullptr).status());
}

absl::Status Runc::Restore(const std::string& id, const std::string& bundle,
                           const RestoreOptions& options, ChildStdio stdio) const {
  // --no-subreaper: the shim reaps nothing; the exit monitor sees the exits.
  std::vector<std::string> args = {"--bundle", bundle, "--detach", "--no-subreaper",
                                   "--pid-file", options.pid_file};
  if (!options.console_socket.empty())
    args.insert(args.end(), {"--console-socket", options.console_socket});
  if (options.no_pivot) args.push_back("--no-pivot");
  AppendCriuArgs(options.criu, args);
  args.push_back(id);
  return CriuFailure(
      Run("restore", args, &stdio, options.on_spawned ? &options.on_spawned : nullptr).status());
}

absl::Status Runc::Update(const std::string& id, std::string_view resources_json) const {
  return Run("update", {"--resources", "-", id}, nullptr, nullptr, resources_json).status();
}

absl::StatusOr<pid_t> ReadPidFile(const std::string& path) {
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus(fmt::format("open pid file {}", path));
  char buf[64];
  ssize_t n;
  do {
    n = read(fd.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return base::ErrnoStatus(fmt::format("read pid file {}", path));
  std::string_view text = TrimSpace(std::string_view(buf, static_cast<size_t>(n)));
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || pid <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("pid file {}: not a pid: '{}'", path, text.substr(0, 32)));
  }
  return pid;
}

std::string RuntimeTempDir() {
  for (const char* name : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    const char* dir = std::getenv(name);
    if (dir != nullptr && dir[0] != '\0') return dir;
  }
  return "/tmp";
}

absl::StatusOr<std::vector<pid_t>> ParsePsJson(std::string_view json) {
  auto bad = [&json] {
    return absl::InvalidArgumentError(
        fmt::format("unexpected ps output (want a JSON array of pids): '{}'",
                    TrimSpace(json).substr(0, 200)));
  };
  const nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  std::vector<pid_t> pids;
  if (doc.is_null()) return pids;  // runc says null for none
  if (!doc.is_array()) return bad();  // also what did not parse (discarded)
  for (const nlohmann::json& pid : doc) {
    if (pid.is_number_unsigned()) {
      uint64_t value = pid.get<uint64_t>();
      if (value == 0 || value > INT_MAX) return bad();
      pids.push_back(static_cast<pid_t>(value));
    } else {
      return bad();  // negative, fractional, or not a number
    }
  }
  return pids;
}

std::string LastLogError(std::string_view log_text) {
  std::string last;
  while (!log_text.empty()) {
    size_t eol = log_text.find('\n');
    std::string_view line = log_text.substr(0, eol);
    log_text.remove_prefix(eol == std::string_view::npos ? log_text.size() : eol + 1);
    // Lines that are not JSON objects (a partial line, plain text) are skipped.
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!entry.is_object()) continue;
    auto level = entry.find("level");
    auto msg = entry.find("msg");
    if (level == entry.end() || !level->is_string() || msg == entry.end() || !msg->is_string())
      continue;
    const std::string& l = level->get_ref<const std::string&>();
    if (l == "error" || l == "fatal" || l == "panic")
      last = TrimSpace(msg->get_ref<const std::string&>());
  }
  return last;
}

absl::Status RuntimeError(std::string_view prefix, std::string_view message) {
  // What runc and crun say when the container or the process is gone.
  static constexpr std::string_view kGone[] = {
      "does not exist", "not running", "no such process", "process already finished",
      "container not running",
  };
  std::string text = fmt::format("{}: {}", prefix, message);
  const std::string lower = ToLower(message);
  for (std::string_view gone : kGone) {
    if (lower.find(gone) != std::string::npos) return absl::NotFoundError(text);
  }
  return absl::UnknownError(text);
}

std::string CriuLogErrors(std::string_view log_text, size_t max) {
  std::vector<std::string_view> found;
  while (!log_text.empty() && found.size() < max) {
    size_t eol = log_text.find('\n');
    std::string_view line = log_text.substr(0, eol);
    log_text.remove_prefix(eol == std::string_view::npos ? log_text.size() : eol + 1);
    // "(00.054466) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
    size_t at = line.find("Error (");
    if (at == std::string_view::npos) continue;
    size_t colon = line.find("): ", at);
    if (colon == std::string_view::npos) continue;
    std::string_view text = TrimSpace(line.substr(colon + 3));
    // A helper CRIU ran failed: says nothing by itself.
    if (text.empty() || text.starts_with("exited, status=")) continue;
    if (std::find(found.begin(), found.end(), text) == found.end()) found.push_back(text);
  }
  std::string out;
  for (std::string_view t : found) out += fmt::format("{}{}", out.empty() ? "" : "; ", t);
  return out;
}

absl::Status CriuFailure(const absl::Status& runtime_error) {
  if (runtime_error.ok()) return runtime_error;
  const std::string text_of_error(runtime_error.message());
  std::string_view message = text_of_error;
  if (ToLower(message).find("criu") == std::string::npos) return runtime_error;
  // runc: "criu failed: type DUMP errno 0\nlog file: <path>".
  std::string head(message), log_path;
  if (size_t at = message.find("log file: "); at != std::string_view::npos) {
    log_path = std::string(TrimSpace(message.substr(at + 10)));
    head = std::string(TrimSpace(message.substr(0, at)));
  }
  std::replace(head.begin(), head.end(), '\n', ' ');
  std::string reason = log_path.empty() ? "" : CriuLogErrors(ReadLogSince(log_path, 0));
  std::string text = head;
  if (!reason.empty()) text += fmt::format(": criu: {}", reason);
  if (!log_path.empty()) text += fmt::format(" (log: {})", log_path);
  return absl::FailedPreconditionError(text);
}

}  // namespace shim::oci
