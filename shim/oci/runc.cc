#include "shim/oci/runc.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "shim/oci/runc_output.h"
#include "shim/oci/runc_spawn.h"

namespace shim::oci {
namespace {

std::string_view BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
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

std::string RuntimeTempDir() {
  for (const char* name : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    const char* dir = std::getenv(name);
    if (dir != nullptr && dir[0] != '\0') return dir;
  }
  return "/tmp";
}

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

}  // namespace shim::oci
