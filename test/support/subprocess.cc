#include "test/support/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <unordered_set>

#include "absl/strings/str_join.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "test/support/fs_util.h"

extern char** environ;

namespace test_support {
namespace {

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Pids of children owned by a live Subprocess; ReapOrphans() leaves them alone.
// Spawn holds the lock from fork() until the pid is registered.
std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}
std::unordered_set<pid_t>& Registry() {
  static std::unordered_set<pid_t> pids;
  return pids;
}
void Unregister(pid_t pid) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  Registry().erase(pid);
}

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

int MillisUntil(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so that poll() does not wake up just before the deadline.
  return static_cast<int>(std::min<int64_t>(left.count() + 1, INT_MAX));
}

// Moves fd to a number >= 3 so that dup2() onto 0..2 in the child cannot
// clobber another fd we still need.
absl::Status MoveAbove2(base::UniqueFd& fd) {
  if (!fd || fd.get() > 2) return absl::OkStatus();
  int n = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (n < 0) return base::ErrnoStatus("fcntl F_DUPFD_CLOEXEC");
  fd.Reset(n);
  return absl::OkStatus();
}

absl::StatusOr<base::UniqueFd> Memfd(const char* name) {
  base::UniqueFd fd(memfd_create(name, MFD_CLOEXEC));
  if (!fd) return base::ErrnoStatus("memfd_create");
  return fd;
}

std::string ReadAllAt0(int fd) {
  std::string out;
  if (fd < 0) return out;
  char buf[65536];
  off_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

absl::StatusOr<base::UniqueFd> OpenOutput(const OutputSpec& spec, bool is_stderr) {
  switch (spec.mode) {
    case OutputSpec::Mode::kCapture: {
      // An unnamed regular file rather than a memfd: since Linux 6.14
      // pseudo files (memfds) send no inotify events, and WaitForOutput
      // needs them. memfd is the fallback where O_TMPFILE is unsupported.
      const char* tmp = std::getenv("TMPDIR");
      base::UniqueFd fd(open(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                             O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      if (fd) return fd;
      return Memfd(is_stderr ? "stderr" : "stdout");
    }
    case OutputSpec::Mode::kFile: {
      base::UniqueFd fd(
          open(spec.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
      if (!fd) return base::ErrnoStatus("open " + spec.path);
      return fd;
    }
    case OutputSpec::Mode::kNull: {
      base::UniqueFd fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
      if (!fd) return base::ErrnoStatus("open /dev/null");
      return fd;
    }
    case OutputSpec::Mode::kInherit:
    case OutputSpec::Mode::kToStdout:
      return base::UniqueFd();
  }
  return absl::InvalidArgumentError("bad OutputSpec mode");
}

struct ChildError {
  int stage;  // 0 dup2, 1 chdir, 2 execve, 3 prctl/setsid
  int err;
};

[[noreturn]] void ChildFail(int report_fd, int stage) {
  ChildError e{stage, errno};
  ssize_t ignored = write(report_fd, &e, sizeof e);
  (void)ignored;
  _exit(127);
}

struct ProcInfo {
  pid_t ppid = 0;
  char state = '?';
};

// Parses /proc/<pid>/stat: "pid (comm) S ppid ...". comm may contain ')'.
bool ReadProcStat(pid_t pid, ProcInfo* info) {
  absl::StatusOr<std::string> stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  if (!stat.ok()) return false;
  size_t close = stat->rfind(')');
  if (close == std::string::npos || close + 4 > stat->size()) return false;
  info->state = (*stat)[close + 2];
  info->ppid = static_cast<pid_t>(std::strtol(stat->c_str() + close + 4, nullptr, 10));
  return true;
}

std::map<pid_t, ProcInfo> ScanProc() {
  std::map<pid_t, ProcInfo> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid <= 0) continue;
    ProcInfo info;
    if (ReadProcStat(static_cast<pid_t>(pid), &info)) out[static_cast<pid_t>(pid)] = info;
  }
  closedir(d);
  return out;
}

bool PathAtOrBelow(std::string_view path, std::string_view dir) {
  return path == dir ||
         (path.size() > dir.size() && path.substr(0, dir.size()) == dir && path[dir.size()] == '/');
}

// `dir` occurs in `text` as a whole path or a path prefix (followed by '/',
// a NUL, a separator or the end), not as the prefix of a longer name.
bool MentionsPath(std::string_view text, std::string_view dir) {
  for (size_t pos = text.find(dir); pos != std::string_view::npos;
       pos = text.find(dir, pos + 1)) {
    size_t end = pos + dir.size();
    if (end == text.size()) return true;
    char c = text[end];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return true;
    }
  }
  return false;
}

std::string Readlink(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
  if (n < 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (signal != 0) return fmt::format("signal {} ({})", signal, strsignal(signal));
  return fmt::format("exit {}", code);
}

std::string Result::ToString() const {
  std::string s = signal != 0 ? fmt::format("killed by signal {} ({})", signal, strsignal(signal))
                              : fmt::format("exit code {}", exit_code);
  s += fmt::format("\n--- stdout ---\n{}\n--- stderr ---\n{}", out, err);
  return s;
}

std::ostream& operator<<(std::ostream& os, const Result& r) { return os << r.ToString(); }
std::ostream& operator<<(std::ostream& os, const ExitStatus& s) { return os << s.ToString(); }

absl::StatusOr<std::string> FindInPath(std::string_view name, std::string_view path_env) {
  if (name.find('/') != std::string_view::npos) return std::string(name);
  for (const std::string& dir : Split(path_env, ':', /*skip_empty=*/false)) {
    std::string candidate = fmt::format("{}/{}", dir.empty() ? "." : dir, name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::NotFoundError(fmt::format("{}: not found in PATH={}", name, path_env));
}

absl::StatusOr<Subprocess> Subprocess::Spawn(SpawnOptions o) {
  if (o.argv.empty()) return absl::InvalidArgumentError("Spawn: empty argv");

  // Environment.
  std::vector<std::string> env;
  if (!o.clear_env) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  }
  for (const auto& [key, value] : o.env) {
    std::string prefix = key + "=";
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
    if (value.has_value()) env.push_back(prefix + *value);
  }
  std::string path_env = kDefaultPath;
  for (const std::string& e : env) {
    if (e.starts_with("PATH=")) path_env = e.substr(5);
  }
  absl::StatusOr<std::string> exe = FindInPath(o.argv[0], path_env);
  if (!exe.ok()) return exe.status();

  // Child's stdio.
  base::UniqueFd child_in, parent_stdin_pipe;
  if (o.stdin_pipe) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe2");
    child_in.Reset(p[0]);
    parent_stdin_pipe.Reset(p[1]);
  } else if (o.stdin_data.has_value()) {
    absl::StatusOr<base::UniqueFd> m = Memfd("stdin");
    if (!m.ok()) return m.status();
    child_in = std::move(*m);
    std::string_view data = *o.stdin_data;
    while (!data.empty()) {
      ssize_t n = write(child_in.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return base::ErrnoStatus("write stdin memfd");
      data.remove_prefix(static_cast<size_t>(n));
    }
    if (lseek(child_in.get(), 0, SEEK_SET) != 0) return base::ErrnoStatus("lseek stdin memfd");
  } else {
    child_in.Reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!child_in) return base::ErrnoStatus("open /dev/null");
  }
  if (o.out.mode == OutputSpec::Mode::kToStdout) {
    return absl::InvalidArgumentError("Spawn: kToStdout is for stderr only");
  }
  absl::StatusOr<base::UniqueFd> child_out = OpenOutput(o.out, false);
  if (!child_out.ok()) return child_out.status();
  absl::StatusOr<base::UniqueFd> child_err = OpenOutput(o.err, true);
  if (!child_err.ok()) return child_err.status();
  for (base::UniqueFd* fd : {&child_in, &*child_out, &*child_err}) {
    if (absl::Status s = MoveAbove2(*fd); !s.ok()) return s;
  }
  const bool err_to_out = o.err.mode == OutputSpec::Mode::kToStdout;

  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe2");
  base::UniqueFd report_r(report[0]), report_w(report[1]);
  if (absl::Status s = MoveAbove2(report_w); !s.ok()) return s;

  // Everything the child touches is prepared here: after fork() it may only
  // make async-signal-safe calls.
  std::vector<char*> argv_c, env_c;
  for (std::string& a : o.argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  for (std::string& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);
  const char* cwd = o.cwd.empty() ? nullptr : o.cwd.c_str();
  const int in_fd = child_in.get(), out_fd = child_out->get(), err_fd = child_err->get();
  const int report_fd = report_w.get();
  const int death_signal = o.death_signal;
  const bool new_session = o.new_session;
  const pid_t parent = getpid();

  Subprocess p;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    pid_t pid = fork();
    if (pid < 0) return base::ErrnoStatus("fork");
    if (pid == 0) {
      if (death_signal != 0) {
        if (prctl(PR_SET_PDEATHSIG, death_signal) != 0) ChildFail(report_fd, 3);
        if (getppid() != parent) _exit(127);
      }
      if (new_session && setsid() < 0) ChildFail(report_fd, 3);
      ResetSignalsInChild();
      if (dup2(in_fd, 0) < 0) ChildFail(report_fd, 0);
      if (out_fd >= 0 && dup2(out_fd, 1) < 0) ChildFail(report_fd, 0);
      if (err_to_out) {
        if (dup2(1, 2) < 0) ChildFail(report_fd, 0);
      } else if (err_fd >= 0 && dup2(err_fd, 2) < 0) {
        ChildFail(report_fd, 0);
      }
      if (cwd != nullptr && chdir(cwd) != 0) ChildFail(report_fd, 1);
      // Nothing else leaks into the child (the report pipe is already CLOEXEC).
      syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
      execve(exe->c_str(), argv_c.data(), env_c.data());
      ChildFail(report_fd, 2);
    }
    Registry().insert(pid);
    p.pid_ = pid;
  }
  p.description_ = absl::StrJoin(o.argv, " ");
  p.new_session_ = new_session;
  p.pidfd_.Reset(PidfdOpen(p.pid_));
  int pidfd_errno = errno;
  report_w.Reset();

  ChildError e{};
  ssize_t n;
  do {
    n = read(report_r.get(), &e, sizeof e);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof e)) {
    (void)p.Reap();
    static constexpr const char* kStage[] = {"dup2", "chdir", "execve", "prctl/setsid"};
    std::string what = fmt::format("spawn {}: {} {}", p.description_, kStage[e.stage & 3],
                                   e.stage == 1 ? o.cwd : *exe);
    return base::ErrnoStatus(what, e.err);
  }
  if (!p.pidfd_) {
    return base::ErrnoStatus("pidfd_open", pidfd_errno);  // ~Subprocess kills it
  }
  if (o.out.mode == OutputSpec::Mode::kCapture) p.out_fd_ = std::move(*child_out);
  if (o.err.mode == OutputSpec::Mode::kCapture) p.err_fd_ = std::move(*child_err);
  p.stdin_pipe_ = std::move(parent_stdin_pipe);
  return p;
}

Subprocess::Subprocess(Subprocess&& other) noexcept { *this = std::move(other); }

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    KillAndReapNow();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
    out_fd_ = std::move(other.out_fd_);
    err_fd_ = std::move(other.err_fd_);
    stdin_pipe_ = std::move(other.stdin_pipe_);
    new_session_ = other.new_session_;
    status_ = std::exchange(other.status_, std::nullopt);
    description_ = std::move(other.description_);
  }
  return *this;
}

Subprocess::~Subprocess() { KillAndReapNow(); }

void Subprocess::KillAndReapNow() {
  if (!running()) return;
  if (new_session_) kill(-pid_, SIGKILL);  // pid == pgid; not reaped yet, so not reused
  if (pidfd_) {
    PidfdSendSignal(pidfd_.get(), SIGKILL);
  } else {
    kill(pid_, SIGKILL);
  }
  (void)Reap();
}

absl::StatusOr<ExitStatus> Subprocess::Reap() {
  if (status_.has_value()) return *status_;
  if (pid_ <= 0) return absl::FailedPreconditionError("no process");
  absl::StatusOr<ExitStatus> st = ReapChild(pid_, description_);
  Unregister(pid_);
  status_ = st.ok() ? *st : ExitStatus{-1, 0};
  return st;
}

void ResetSignalsInChild() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

absl::StatusOr<ExitStatus> ReapChild(pid_t pid, std::string_view description) {
  siginfo_t info{};
  int r;
  do {
    r = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return base::ErrnoStatus(fmt::format("waitid {} ({})", pid, description));
  ExitStatus st;
  if (info.si_code == CLD_EXITED) {
    st.code = info.si_status;
  } else {
    st.signal = info.si_status;
    st.code = -1;
  }
  return st;
}

absl::StatusOr<ExitStatus> Subprocess::Wait(Deadline deadline) {
  if (status_.has_value()) return *status_;
  if (pid_ <= 0) return absl::FailedPreconditionError("Wait: no process");
  for (;;) {
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    int r = poll(&pfd, 1, MillisUntil(deadline));
    if (r < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoStatus("poll pidfd");
    }
    if (r > 0) return Reap();
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          fmt::format("{} (pid {}) still running at the deadline", description_, pid_));
    }
  }
}

absl::StatusOr<ExitStatus> Subprocess::Wait() {
  if (status_.has_value()) return *status_;
  if (pid_ <= 0) return absl::FailedPreconditionError("Wait: no process");
  return Reap();
}

absl::Status Subprocess::Signal(int sig) {
  if (!running()) return absl::FailedPreconditionError(description_ + ": not running");
  if (PidfdSendSignal(pidfd_.get(), sig) != 0 && errno != ESRCH) {
    return base::ErrnoStatus(fmt::format("pidfd_send_signal {} to {}", sig, pid_));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExitStatus> Subprocess::Kill(int sig, Deadline deadline) {
  if (!running()) {
    if (status_.has_value()) return *status_;
    return absl::FailedPreconditionError("Kill: no process");
  }
  if (sig != SIGKILL) {
    (void)Signal(sig);
    absl::StatusOr<ExitStatus> st = Wait(deadline);
    if (st.ok() || !absl::IsDeadlineExceeded(st.status())) return st;
  }
  KillAndReapNow();
  return Reap();
}

std::string Subprocess::out() const { return ReadAllAt0(out_fd_.get()); }
std::string Subprocess::err() const { return ReadAllAt0(err_fd_.get()); }

absl::Status Subprocess::WaitForOutput(std::string_view text, Deadline deadline, bool from_stderr) {
  const base::UniqueFd& fd = from_stderr ? err_fd_ : out_fd_;
  if (!fd) return absl::FailedPreconditionError("WaitForOutput: that stream is not captured");
  base::UniqueFd in(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return base::ErrnoStatus("inotify_init1");
  std::string self = fmt::format("/proc/self/fd/{}", fd.get());
  const bool notifies = Readlink(self).find("memfd:") != 0;
  if (inotify_add_watch(in.get(), self.c_str(), IN_MODIFY) < 0) {
    return base::ErrnoStatus("inotify_add_watch " + self);
  }
  for (;;) {
    // Watch first, then look: a write between the two is still seen.
    std::string now = ReadAllAt0(fd.get());
    if (now.find(text) != std::string::npos) return absl::OkStatus();
    bool exited = !running();
    if (!exited) {
      pollfd pfd[2] = {{in.get(), POLLIN, 0}, {pidfd_.get(), POLLIN, 0}};
      // Without inotify events (a memfd), re-check on a short interval.
      int timeout = MillisUntil(deadline);
      if (!notifies) timeout = std::min(timeout, 10);
      int r = poll(pfd, 2, timeout);
      if (r < 0 && errno != EINTR) return base::ErrnoStatus("poll");
      if (r > 0 && (pfd[0].revents & POLLIN)) {
        char buf[4096];
        while (read(in.get(), buf, sizeof buf) > 0) {
        }
      }
      exited = r > 0 && (pfd[1].revents & POLLIN);
      if (r == 0 && Clock::now() >= deadline) {
        now = ReadAllAt0(fd.get());
        if (now.find(text) != std::string::npos) return absl::OkStatus();
        return absl::DeadlineExceededError(fmt::format(
            "{}: no \"{}\" in its {} by the deadline; it has: {}", description_, text,
            from_stderr ? "stderr" : "stdout", now));
      }
    }
    if (exited) {
      std::string final_text = ReadAllAt0(fd.get());
      if (final_text.find(text) != std::string::npos) return absl::OkStatus();
      return absl::FailedPreconditionError(
          fmt::format("{} exited without printing \"{}\"; it printed: {}", description_, text,
                      final_text));
    }
  }
}

absl::StatusOr<Result> Run(std::vector<std::string> argv, Clock::duration timeout) {
  SpawnOptions o;
  o.argv = std::move(argv);
  return Run(std::move(o), timeout);
}

absl::StatusOr<Result> Run(SpawnOptions options, Clock::duration timeout) {
  Deadline deadline = DeadlineIn(timeout);
  absl::StatusOr<Subprocess> p = Subprocess::Spawn(std::move(options));
  if (!p.ok()) return p.status();
  absl::StatusOr<ExitStatus> st = p->Wait(deadline);
  if (!st.ok()) {
    absl::Status s = st.status();
    if (absl::IsDeadlineExceeded(s)) {
      (void)p->Kill();
      auto secs = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count() / 1000.0;
      return absl::DeadlineExceededError(
          fmt::format("{}: still running after {:.1f}s, killed\n--- stdout ---\n{}\n--- stderr "
                      "---\n{}",
                      p->description(), secs, p->out(), p->err()));
    }
    return s;
  }
  Result r;
  r.exit_code = st->ShellCode();
  r.signal = st->signal;
  r.out = p->out();
  r.err = p->err();
  return r;
}

absl::Status BecomeSubreaper() {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return base::ErrnoStatus("PR_SET_CHILD_SUBREAPER");
  return absl::OkStatus();
}

int ReapOrphans() {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  const pid_t self = getpid();
  int reaped = 0;
  for (const auto& [pid, info] : ScanProc()) {
    if (info.ppid != self || Registry().count(pid) != 0) continue;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) ++reaped;
  }
  return reaped;
}

std::vector<pid_t> ProcessesReferencing(const std::string& dir) {
  std::map<pid_t, ProcInfo> procs = ScanProc();
  // Never us nor an ancestor of ours.
  std::set<pid_t> protected_pids;
  for (pid_t p = getpid(); p > 0 && protected_pids.insert(p).second;) {
    auto it = procs.find(p);
    if (it == procs.end()) break;
    p = it->second.ppid;
  }
  std::set<pid_t> matched;
  for (const auto& [pid, info] : procs) {
    if (info.state == 'Z' || protected_pids.count(pid) != 0) continue;
    std::string base = fmt::format("/proc/{}/", pid);
    bool hit = false;
    for (const char* link : {"cwd", "root", "exe"}) {
      std::string target = Readlink(base + link);
      if (!target.empty() && PathAtOrBelow(target, dir)) hit = true;
    }
    if (!hit) {
      absl::StatusOr<std::string> cmdline = ReadFile(base + "cmdline");
      hit = cmdline.ok() && MentionsPath(*cmdline, dir);
    }
    if (hit) matched.insert(pid);
  }
  // Add descendants (a container's processes are children of its shim).
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, info] : procs) {
      if (info.state == 'Z' || protected_pids.count(pid) != 0 || matched.count(pid) != 0) continue;
      if (matched.count(info.ppid) != 0) grew = matched.insert(pid).second || grew;
    }
  }
  return {matched.begin(), matched.end()};
}

std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& [pid, info] : ScanProc()) {
    if (info.ppid == parent) out.push_back(pid);
  }
  return out;
}

std::vector<pid_t> KillAndWait(const std::vector<pid_t>& pids, Deadline deadline) {
  std::vector<std::pair<pid_t, base::UniqueFd>> fds;
  for (pid_t pid : pids) {
    base::UniqueFd fd(PidfdOpen(pid));
    if (!fd) continue;  // already gone
    PidfdSendSignal(fd.get(), SIGKILL);
    fds.emplace_back(pid, std::move(fd));
  }
  while (!fds.empty()) {
    std::vector<pollfd> pfds;
    for (auto& [pid, fd] : fds) pfds.push_back({fd.get(), POLLIN, 0});
    int r = poll(pfds.data(), pfds.size(), MillisUntil(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    std::vector<std::pair<pid_t, base::UniqueFd>> left;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) left.push_back(std::move(fds[i]));
    }
    fds = std::move(left);
  }
  std::vector<pid_t> alive;
  for (auto& [pid, fd] : fds) alive.push_back(pid);
  return alive;
}

}  // namespace test_support
