#include "test/support/private_containerd.h"

#include <dirent.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/strings/str_join.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "test/support/busybox_rootfs.h"

#ifndef TEST_SUPPORT_SHIM_DIR
#define TEST_SUPPORT_SHIM_DIR ""
#endif

namespace test_support {
namespace {

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

int MillisUntil(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
}

// True when a unix stream socket at `path` accepts a connection.
bool Connects(const std::string& path) {
  base::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int r;
  do {
    r = connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  } while (r != 0 && errno == EINTR);
  return r == 0;
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string TomlString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

constexpr char kDirPrefix[] = "embed-ctrd-";

// "<pid> <start time in clock ticks since boot>" of a process, or "".
std::string ProcessIdentity(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  if (!stat.ok()) return {};
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return {};
  // Fields after "(comm)": state is field 3, starttime field 22.
  std::vector<std::string> f = Split(std::string_view(*stat).substr(close + 2), ' ');
  if (f.size() < 20) return {};
  return fmt::format("{} {}", pid, f[19]);
}

bool OwnerAlive(const std::string& dir) {
  absl::StatusOr<std::string> owner = ReadFile(dir + "/owner");
  if (!owner.ok()) {
    // No owner file: a fixture still starting, or one from a crash before it
    // wrote the file. Only an old directory is considered stale.
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) return false;
    return time(nullptr) - st.st_mtime < 600;
  }
  std::vector<std::string> f = Split(*owner, ' ');
  if (f.empty()) return false;
  pid_t pid = static_cast<pid_t>(std::strtol(f[0].c_str(), nullptr, 10));
  std::string now = pid > 0 ? ProcessIdentity(pid) : std::string();
  std::string recorded = *owner;
  while (!recorded.empty() && std::isspace(static_cast<unsigned char>(recorded.back()))) {
    recorded.pop_back();
  }
  return !now.empty() && now == recorded;
}

}  // namespace

int SweepStaleContainerdDirs(const std::string& base_dir) {
  int removed = 0;
  DIR* d = opendir(base_dir.c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> candidates;
  while (dirent* e = readdir(d)) {
    if (std::string_view(e->d_name).starts_with(kDirPrefix)) {
      candidates.push_back(base_dir + "/" + e->d_name);
    }
  }
  closedir(d);
  for (const std::string& dir : candidates) {
    if (OwnerAlive(dir)) continue;
    std::vector<pid_t> pids = ProcessesReferencing(dir);
    if (!pids.empty()) KillAndWait(pids, DeadlineIn(std::chrono::seconds(10)));
    ReapOrphans();
    absl::Status s = UnmountUnder(dir);
    if (s.ok()) s = RemoveTree(dir);
    if (s.ok()) {
      ++removed;
      fmt::print(stderr, "PrivateContainerd: removed stale {} (its test died)\n", dir);
    } else {
      fmt::print(stderr, "PrivateContainerd: cannot remove stale {}: {}\n", dir, s.ToString());
    }
  }
  return removed;
}

std::string DefaultShimDir() {
  if (const char* env = std::getenv("EMBED_SHIM_DIR"); env != nullptr && *env != '\0') return env;
  return TEST_SUPPORT_SHIM_DIR;
}

PrivateContainerd::PrivateContainerd(PrivateContainerdOptions options)
    : options_(std::move(options)), temp_(kDirPrefix, options_.base_dir) {}

absl::StatusOr<std::unique_ptr<PrivateContainerd>> PrivateContainerd::Start(
    PrivateContainerdOptions options) {
  if (absl::Status s = BecomeSubreaper(); !s.ok()) return s;
  SweepStaleContainerdDirs(options.base_dir);
  std::unique_ptr<PrivateContainerd> cd(new PrivateContainerd(std::move(options)));
  if (!cd->temp_.ok()) return cd->temp_.status();
  cd->dir_ = cd->temp_.path();
  if (absl::Status s = WriteFile(cd->dir_ + "/owner", ProcessIdentity(getpid()) + "\n"); !s.ok()) {
    return s;
  }
  cd->address_ = cd->dir_ + "/containerd.sock";
  if (cd->ttrpc_address().size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError("socket path too long: " + cd->ttrpc_address());
  }

  std::vector<std::string> path = cd->options_.extra_path.value_or(
      std::vector<std::string>{DefaultShimDir()});
  std::erase_if(path, [](const std::string& p) { return p.empty(); });
  const char* usual = std::getenv("PATH");
  path.emplace_back(usual != nullptr && *usual != '\0' ? usual : kDefaultPath);
  cd->path_env_ = absl::StrJoin(path, ":");

  for (const char* sub : {"/root", "/state", "/opt"}) {
    if (absl::Status s = MakeDirs(cd->dir_ + sub, 0711); !s.ok()) return s;
  }
  // CRI is not needed by ctr and is the slowest plugin to start. 2.x splits
  // it into several plugins, and its NRI socket is host-wide.
  std::string disabled;
  if (cd->options_.disable_cri) {
    disabled = cd->options_.config_version >= 3
                   ? R"(disabled_plugins = ["io.containerd.cri.v1.runtime", )"
                     R"("io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri", )"
                     R"("io.containerd.nri.v1.nri"])"
                   : R"(disabled_plugins = ["io.containerd.grpc.v1.cri"])";
  } else if (cd->options_.config_version >= 3) {
    disabled = R"(disabled_plugins = ["io.containerd.nri.v1.nri"])";
  }
  std::string config = fmt::format(
      R"(# Generated by test/support/private_containerd.cc
version = {version}
root = {root}
state = {state}
{disabled}

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  level = {level}

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
{extra}
)",
      fmt::arg("version", cd->options_.config_version), fmt::arg("disabled", disabled),
      fmt::arg("root", TomlString(cd->root())), fmt::arg("state", TomlString(cd->state())),
      fmt::arg("grpc", TomlString(cd->address_)),
      fmt::arg("ttrpc", TomlString(cd->ttrpc_address())),
      fmt::arg("level", TomlString(cd->options_.log_level)),
      fmt::arg("opt", TomlString(cd->dir_ + "/opt")), fmt::arg("extra", cd->options_.extra_config));
  if (absl::Status s = WriteFile(cd->config_path(), config); !s.ok()) return s;

  if (absl::Status s = cd->StartDaemon(); !s.ok()) {
    absl::Status cleanup = cd->Shutdown();
    if (!cleanup.ok()) fmt::print(stderr, "PrivateContainerd cleanup: {}\n", cleanup.ToString());
    return s;
  }
  return cd;
}

PrivateContainerd::~PrivateContainerd() {
  absl::Status s = Shutdown();
  if (!s.ok()) fmt::print(stderr, "PrivateContainerd teardown: {}\n", s.ToString());
}

absl::Status PrivateContainerd::StartDaemon() {
  if (running()) return absl::FailedPreconditionError("containerd is already running");
  SpawnOptions o;
  if (!options_.tini.empty()) o.argv = {options_.tini, "-s", "-p", "SIGTERM", "--"};
  for (std::string a : {options_.containerd, std::string("--config"), config_path()}) {
    o.argv.push_back(std::move(a));
  }
  o.env = {{"PATH", path_env_}, {"CONTAINERD_ADDRESS", std::nullopt},
           {"CONTAINERD_NAMESPACE", std::nullopt}};
  o.cwd = dir_;
  o.out = OutputSpec::File(log_path());
  o.err = OutputSpec::ToStdout();
  // If the test process dies, tini gets SIGTERM and forwards it to containerd.
  o.death_signal = SIGTERM;
  absl::StatusOr<Subprocess> p = Subprocess::Spawn(std::move(o));
  if (!p.ok()) return p.status();
  daemon_.emplace(std::move(*p));
  return WaitReady(DeadlineIn(options_.start_timeout));
}

absl::Status PrivateContainerd::WaitReady(Deadline deadline) {
  base::UniqueFd in(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return base::ErrnoStatus("inotify_init1");
  if (inotify_add_watch(in.get(), dir_.c_str(), IN_CREATE | IN_MOVED_TO | IN_ATTRIB) < 0) {
    return base::ErrnoStatus("inotify_add_watch " + dir_);
  }
  for (;;) {
    // Watch first, then look. Go binds and listens in one call, but a socket
    // file can exist a moment before listen() (or be left over from a
    // previous run of this config): then retry the connect on a short,
    // deadline-bounded interval instead of waiting for another event.
    if (Connects(address_) && Connects(ttrpc_address())) return absl::OkStatus();
    bool socket_file = Exists(address_) || Exists(ttrpc_address());
    int timeout = MillisUntil(deadline);
    if (socket_file) timeout = std::min(timeout, 20);
    pollfd pfd[2] = {{in.get(), POLLIN, 0}, {daemon_->pidfd(), POLLIN, 0}};
    int r = poll(pfd, 2, timeout);
    if (r < 0 && errno != EINTR) return base::ErrnoStatus("poll");
    if (r > 0 && (pfd[0].revents & POLLIN)) {
      char buf[4096];
      while (read(in.get(), buf, sizeof buf) > 0) {
      }
    }
    if (r > 0 && (pfd[1].revents & POLLIN)) {
      absl::StatusOr<ExitStatus> st = daemon_->Wait();
      return absl::FailedPreconditionError(fmt::format(
          "containerd exited before it was ready ({}); log {}:\n{}",
          st.ok() ? st->ToString() : st.status().ToString(), log_path(), LogTail()));
    }
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(fmt::format(
          "containerd not ready (sockets {} and {} do not accept connections) by the deadline; "
          "log {}:\n{}",
          address_, ttrpc_address(), log_path(), LogTail()));
    }
  }
}

pid_t PrivateContainerd::containerd_pid() const {
  if (!running()) return 0;
  if (options_.tini.empty()) return daemon_->pid();
  // tini is a subreaper: orphaned shims become its children too.
  for (pid_t pid : ChildrenOf(daemon_->pid())) {
    absl::StatusOr<std::string> cmdline = ReadFile(fmt::format("/proc/{}/cmdline", pid));
    if (cmdline.ok() && cmdline->find(config_path()) != std::string::npos) return pid;
  }
  return 0;
}

absl::Status PrivateContainerd::StopDaemon(int sig) {
  if (!daemon_.has_value()) return absl::OkStatus();
  absl::Status result;
  if (daemon_->running()) {
    // Signal containerd itself: tini would forward SIGTERM, but not SIGKILL.
    pid_t cpid = containerd_pid();
    if (cpid > 0 && cpid != daemon_->pid()) {
      if (kill(cpid, sig) != 0 && errno != ESRCH) result = base::ErrnoStatus("kill containerd");
    } else {
      result = daemon_->Signal(sig);
    }
    absl::StatusOr<ExitStatus> st = daemon_->Wait(DeadlineIn(options_.stop_timeout));
    if (!st.ok() && absl::IsDeadlineExceeded(st.status())) {
      result = absl::DeadlineExceededError(fmt::format(
          "containerd ignored signal {} for {}s; killed it", sig,
          std::chrono::duration_cast<std::chrono::seconds>(options_.stop_timeout).count()));
      if (cpid > 0) KillAndWait({cpid}, DeadlineIn(std::chrono::seconds(10)));
      (void)daemon_->Kill();
    }
  }
  daemon_.reset();
  ReapOrphans();
  return result;
}

absl::Status PrivateContainerd::Restart(int sig) {
  if (absl::Status s = StopDaemon(sig); !s.ok()) return s;
  return StartDaemon();
}

absl::Status PrivateContainerd::CleanupContainers() {
  constexpr auto kTimeout = std::chrono::seconds(30);
  absl::Status first;
  auto note = [&](absl::Status s) {
    if (!s.ok() && first.ok()) first = std::move(s);
  };
  auto lines = [&](std::vector<std::string> args) -> std::vector<std::string> {
    absl::StatusOr<Result> r = Ctr(args, kTimeout);
    if (!r.ok()) {
      note(r.status());
      return {};
    }
    if (r->exit_code != 0) {
      note(absl::InternalError(fmt::format("ctr {}: {}", absl::StrJoin(args, " "), r->ToString())));
      return {};
    }
    return SplitLines(r->out);
  };
  for (const std::string& ns : lines({"namespaces", "ls", "-q"})) {
    std::vector<std::string> tasks = lines({"-n", ns, "tasks", "ls", "-q"});
    for (const std::string& id : tasks) {
      // Fails for tasks that already stopped; the forced delete covers it.
      (void)Ctr({"-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id}, kTimeout);
    }
    if (!tasks.empty()) {
      std::vector<std::string> args = {"-n", ns, "tasks", "rm", "-f"};
      args.insert(args.end(), tasks.begin(), tasks.end());
      (void)lines(args);
    }
    std::vector<std::string> containers = lines({"-n", ns, "containers", "ls", "-q"});
    if (!containers.empty()) {
      std::vector<std::string> args = {"-n", ns, "containers", "rm"};
      args.insert(args.end(), containers.begin(), containers.end());
      (void)lines(args);
    }
    RemoveRuncNamespaceRoot(ns);
  }
  return first;
}

void RemoveRuncNamespaceRoot(const std::string& ns) {
  if (ns == "default") return;
  (void)rmdir(("/run/containerd/runc/" + ns).c_str());  // only if empty
  // ctr's default cgroupsPath is /<ns>/<id>: runc removes <id>, not <ns>.
  std::unique_ptr<DIR, int (*)(DIR*)> root(opendir("/sys/fs/cgroup"), closedir);
  if (root == nullptr) return;
  while (dirent* e = readdir(root.get())) {
    if (e->d_name[0] == '.') continue;
    (void)rmdir(fmt::format("/sys/fs/cgroup/{}/{}", e->d_name, ns).c_str());  // only if empty
  }
}

absl::Status PrivateContainerd::Shutdown() {
  if (shut_down_) return absl::OkStatus();
  shut_down_ = true;
  absl::Status first;
  auto note = [&](absl::Status s) {
    if (!s.ok() && first.ok()) first = std::move(s);
  };
  if (dir_.empty()) return temp_.Remove();
  // Only a daemon that still answers can list and delete its containers
  // (ctr would otherwise wait for a connection).
  if (running() && Connects(address_)) note(CleanupContainers());
  note(StopDaemon(SIGTERM));

  std::vector<pid_t> leftovers = ProcessesReferencing(dir_);
  if (!leftovers.empty()) {
    std::string names;
    for (pid_t pid : leftovers) {
      absl::StatusOr<std::string> cmd = ReadFile(fmt::format("/proc/{}/cmdline", pid));
      std::string c = cmd.ok() ? *cmd : "?";
      std::replace(c.begin(), c.end(), '\0', ' ');
      names += fmt::format("\n  {} {}", pid, c);
    }
    fmt::print(stderr, "PrivateContainerd teardown: killing leftover processes:{}\n", names);
    std::vector<pid_t> alive = KillAndWait(leftovers, DeadlineIn(std::chrono::seconds(10)));
    if (!alive.empty()) {
      note(absl::DeadlineExceededError(
          fmt::format("processes survived SIGKILL: {}", absl::StrJoin(alive, " "))));
    }
  }
  ReapOrphans();
  note(temp_.Remove());  // unmounts everything below, then removes
  return first;
}

std::string PrivateContainerd::Log() const {
  absl::StatusOr<std::string> log = ReadFile(log_path());
  return log.ok() ? *log : std::string();
}

std::string PrivateContainerd::LogTail(size_t bytes) const {
  std::string log = Log();
  if (log.size() > bytes) log = "..." + log.substr(log.size() - bytes);
  return log;
}

bool PrivateContainerd::LogContains(std::string_view text) const {
  return Log().find(text) != std::string::npos;
}

absl::Status PrivateContainerd::WaitForLog(std::string_view text, Clock::duration timeout) {
  Deadline deadline = DeadlineIn(timeout);
  base::UniqueFd in(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return base::ErrnoStatus("inotify_init1");
  if (inotify_add_watch(in.get(), log_path().c_str(), IN_MODIFY) < 0) {
    return base::ErrnoStatus("inotify_add_watch " + log_path());
  }
  for (;;) {
    if (LogContains(text)) return absl::OkStatus();
    pollfd pfd{in.get(), POLLIN, 0};
    int r = poll(&pfd, 1, MillisUntil(deadline));
    if (r < 0 && errno != EINTR) return base::ErrnoStatus("poll");
    if (r > 0) {
      char buf[4096];
      while (read(in.get(), buf, sizeof buf) > 0) {
      }
    } else if (r == 0 && Clock::now() >= deadline) {
      if (LogContains(text)) return absl::OkStatus();
      return absl::DeadlineExceededError(fmt::format(
          "containerd log {} has no \"{}\"; its tail:\n{}", log_path(), text, LogTail()));
    }
  }
}

std::vector<std::string> PrivateContainerd::CtrArgv(std::vector<std::string> args) const {
  std::vector<std::string> argv = {options_.ctr, "--address", address_};
  argv.insert(argv.end(), std::make_move_iterator(args.begin()),
              std::make_move_iterator(args.end()));
  return argv;
}

absl::StatusOr<Result> PrivateContainerd::Ctr(std::vector<std::string> args,
                                              Clock::duration timeout) {
  SpawnOptions o;
  o.argv = CtrArgv(std::move(args));
  o.env = {{"CONTAINERD_NAMESPACE", std::nullopt}, {"CONTAINERD_ADDRESS", std::nullopt}};
  absl::StatusOr<Result> r = Run(std::move(o), timeout);
  // ctr 2.x starts with a warning on a cgroup v1 host, before anything else
  // on its stderr: not the container's output, which tests compare.
  constexpr std::string_view kCgroupV1Warning =
      "msg=\"DEPRECATION: The support for cgroup v1 is deprecated";
  while (r.ok() && r->err.starts_with("time=")) {
    size_t eol = r->err.find('\n');
    if (eol == std::string::npos || r->err.substr(0, eol).find(kCgroupV1Warning) == std::string::npos)
      break;
    r->err.erase(0, eol + 1);
  }
  return r;
}

absl::StatusOr<Subprocess> PrivateContainerd::RunCtrAsync(std::vector<std::string> args,
                                                          SpawnOptions options) const {
  options.argv = CtrArgv(std::move(args));
  options.env.emplace_back("CONTAINERD_NAMESPACE", std::nullopt);
  options.env.emplace_back("CONTAINERD_ADDRESS", std::nullopt);
  return Subprocess::Spawn(std::move(options));
}

absl::StatusOr<std::string> PrivateContainerd::MakeBusyboxRootfs(std::string_view name) {
  std::string path = fmt::format("{}/{}", dir_, name);
  if (absl::Status s = BusyboxRootfs(path); !s.ok()) return s;
  return path;
}

}  // namespace test_support
