#include "shim/process/runc_runtime.h"

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/read_file.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "shim/oci/console.h"
#include "shim/oci/logger.h"
#include "shim/oci/mount.h"
#include "shim/oci/runc.h"
#include "shim/oci/stdio.h"
#include "shim/oci/teardown.h"
#include "shim/process/runtime_marker.h"
#include "shim/process/runtime_options.h"

namespace shim::process {

namespace {

// runc-v2 bounds the console's setup by the same 30 s as its fifo opens.
constexpr std::chrono::milliseconds kConsoleTimeout = std::chrono::seconds(30);

oci::Runc RuncFor(const embedshim::ContainerRecord& c) { return oci::Runc(RuncConfigFor(c)); }

// Mounts what containerd sent as the container's rootfs, if anything;
// true when something was mounted (and must be unmounted on failure).
absl::StatusOr<bool> MountRootfsOf(const embedshim::ContainerRecord& r) {
  std::vector<oci::Mount> mounts;
  for (const auto& m : r.rootfs())
    mounts.push_back({m.type(), m.source(), {m.options().begin(), m.options().end()}});
  if (mounts.empty()) return false;
  if (absl::Status st = oci::MountRootfs(mounts, oci::RootfsOf(r.bundle())); !st.ok()) return st;
  return true;
}

// Stdio for a new process: containerd's fifos for the process itself, or,
// with a terminal, a console socket for the runtime and the fifos for the
// keeper to copy to and from the pty.
struct PreparedStdio {
  oci::ChildStdio child;  // the runtime's (and, without a terminal, the process's)
  std::optional<oci::ConsoleSocket> console;
  base::UniqueFd stdin_keepalive;
  TerminalFds terminal;
  uint32_t logger_pid = 0;  // binary://
  uint64_t logger_start_boottime = 0;
};

// A started logger's start time, read while its pidfd says it lives (so the
// pid was still its own). 0 if it is gone already: nothing to stop later.
uint64_t LoggerStartBoottime(pid_t pid, const base::UniqueFd& pidfd) {
  auto start = bpf::ReadStartBoottime(pid);
  pollfd p{pidfd.get(), POLLIN, 0};
  return start.ok() && poll(&p, 1, 0) == 0 ? *start : 0;
}

oci::StdioOptions StdioOptionsFor(const embedshim::ContainerRecord& r) {
  oci::StdioOptions options;
  options.ns = r.namespace_();
  options.id = r.id();
  options.io_uid = r.options().io_uid();
  options.io_gid = r.options().io_gid();
  return options;
}

absl::StatusOr<PreparedStdio> PrepareStdio(const oci::StdioPaths& paths, bool terminal,
                                           const oci::StdioOptions& options) {
  PreparedStdio out;
  // In terminal mode stderr is the pty too (runc-v2 ignores the path).
  auto opened =
      oci::OpenStdio(terminal ? oci::StdioPaths{paths.in, paths.out, ""} : paths, options);
  if (!opened.ok()) return opened.status();
  if (opened->logger_pid > 0) {
    out.logger_start_boottime = LoggerStartBoottime(opened->logger_pid, opened->logger_pidfd);
    if (out.logger_start_boottime != 0) out.logger_pid = static_cast<uint32_t>(opened->logger_pid);
  }
  if (!terminal) {
    out.child = std::move(opened->child);
    out.stdin_keepalive = std::move(opened->stdin_keepalive);
    return out;
  }
  auto console = oci::ConsoleSocket::Create();
  if (!console.ok()) return console.status();
  out.console.emplace(std::move(*console));
  // No keepalive: the keeper stops copying stdin when its writer leaves,
  // and CloseIO ends the program's input (as runc-v2's console copy).
  out.terminal.in = std::move(opened->child.in);
  out.terminal.out = std::move(opened->child.out);
  return out;
}

// After the runtime ran: the master it sent, for the keeper.
absl::Status ReceiveTerminal(PreparedStdio& stdio) {
  if (!stdio.console) return absl::OkStatus();
  auto master = stdio.console->ReceiveMaster(kConsoleTimeout);
  if (!master.ok()) return master.status();
  stdio.terminal.master = std::move(*master);
  return absl::OkStatus();
}

Spawned SpawnedOf(pid_t pid, uint64_t start_boottime, PreparedStdio& stdio) {
  Spawned s;
  s.pid = pid;
  s.start_boottime = start_boottime;
  s.stdin_keepalive = std::move(stdio.stdin_keepalive);
  s.terminal = std::move(stdio.terminal);
  s.logger_pid = stdio.logger_pid;
  s.logger_start_boottime = stdio.logger_start_boottime;
  return s;
}

// A binary:// logger is gone once this returns: it had its EOF (the
// container is gone, or never got its pipes), or is stopped.
void StopLoggerProcess(const std::string& ns, const std::string& id, uint32_t pid,
                       uint64_t start_boottime) {
  if (pid == 0) return;
  auto pidfd = bpf::PidfdIfSameLive(static_cast<pid_t>(pid), start_boottime);
  if (!pidfd.ok()) return;  // gone already
  auto end = oci::StopLogger(*pidfd);
  if (!end.ok())
    base::LogFor(base::LogLevel::kError, ns, id, "logger pid {}: {}", pid, end.status());
  else if (*end != oci::LoggerEnd::kExited)
    base::LogFor(base::LogLevel::kWarn, ns, id, "logger pid {} did not exit after EOF; {}", pid,
           *end == oci::LoggerEnd::kTerminated ? "SIGTERM stopped it" : "SIGKILL stopped it");
}

}  // namespace

void StopLoggerOf(const embedshim::ContainerRecord& r) {
  StopLoggerProcess(r.namespace_(), r.id(), r.logger_pid(), r.logger_start_boottime());
}

namespace {

// Undoes a create or restore whose runtime ran: the container (if the runtime
// made one), the logger started for it and, with `unmount`, the rootfs.
void TearDownUnborn(const oci::Runc& runc, const embedshim::ContainerRecord& r,
                    const PreparedStdio& stdio, bool unmount) {
  oci::TeardownOptions options;
  options.after_delete = [&](const absl::Status&) {
    StopLoggerProcess(r.namespace_(), r.id(), stdio.logger_pid, stdio.logger_start_boottime);
  };
  options.unmount = unmount;
  (void)oci::TearDown(runc, r.id(), r.bundle(), options);
}

}  // namespace

absl::StatusOr<Spawned> RuncRuntime::Create(const embedshim::ContainerRecord& r, bool replayed) {
  absl::StatusOr<bool> mounted = MountRootfsOf(r);
  if (!mounted.ok()) return mounted.status();
  auto undo_mounts = [&] {
    if (*mounted) (void)oci::UnmountRootfs(oci::RootfsOf(r.bundle()));
  };
  oci::Runc runc = RuncFor(r);
  oci::CreateOptions options;
  options.pid_file = r.bundle() + "/init.pid";
  ApplyCreateFlags(r.options(), &options);
  // Named before it may run: a server that dies meanwhile is followed by one
  // that waits for this runc and adopts its container (InitProcess).
  options.on_spawned = [marker = CreateRuntimeMarker(r.bundle())](pid_t runtime_pid) {
    WriteRuntimeMarker(marker, runtime_pid);
    return absl::OkStatus();
  };
  absl::StatusOr<PreparedStdio> stdio;
  absl::Status st;
  for (int attempt = 0;; ++attempt) {
    stdio = PrepareStdio({r.stdin(), r.stdout(), r.stderr()}, r.terminal(), StdioOptionsFor(r));
    if (!stdio.ok()) {
      undo_mounts();
      return stdio.status();
    }
    options.console_socket = stdio->console ? stdio->console->path() : "";
    st = runc.Create(r.id(), r.bundle(), options, std::move(stdio->child));
    // A replayed Create: the dead server's `runc create` lives on as an
    // orphan and may have created the container meanwhile. That attempt
    // belongs to nobody: remove it and create again.
    if (st.ok() || !replayed || attempt >= 50 ||
        st.message().find("already exists") == absl::string_view::npos)
      break;
    TearDownUnborn(runc, r, *stdio, /*unmount=*/false);  // the rootfs stays for the next try
    usleep(20'000);  // rare recovery path, on a worker
  }
  absl::StatusOr<pid_t> pid = st.ok() ? oci::ReadPidFile(options.pid_file) : st;
  absl::StatusOr<uint64_t> start = pid.ok() ? bpf::ReadStartBoottime(*pid) : pid.status();
  if (start.ok()) st = ReceiveTerminal(*stdio);
  else st = start.status();
  if (!st.ok()) {
    TearDownUnborn(runc, r, *stdio, /*unmount=*/*mounted);
    return st;
  }
  return SpawnedOf(*pid, *start, *stdio);
}

absl::Status RuncRuntime::Start(const embedshim::ContainerRecord& r, bool replayed) {
  absl::Status st = RuncFor(r).Start(r.id());
  // A replayed Start: the dead server's `runc start` lives on as an orphan
  // and may have started the container first ("already running"). Once the
  // init has left runc init, it was started.
  for (int i = 0; !st.ok() && replayed && i < 100; ++i) {
    if (!WaitsInInit(static_cast<pid_t>(r.pid()))) st = absl::OkStatus();
    else usleep(20'000);  // rare recovery path, on a worker
  }
  return st;
}

absl::StatusOr<Spawned> RuncRuntime::Exec(const embedshim::ContainerRecord& r,
                                          const embedshim::ExecRecord& e,
                                          const std::function<absl::Status(pid_t)>& on_spawned) {
  // An exec's logger gets the exec's id as CONTAINER_ID, as under runc-v2.
  oci::StdioOptions stdio_options = StdioOptionsFor(r);
  stdio_options.id = e.exec_id();
  auto stdio = PrepareStdio({e.stdin(), e.stdout(), e.stderr()}, e.terminal(), stdio_options);
  if (!stdio.ok()) return stdio.status();
  oci::ExecOptions options;
  options.process_json = e.spec();
  options.pid_file = ExecPidFile(r.bundle(), e.exec_id());
  options.console_socket = stdio->console ? stdio->console->path() : "";
  options.on_spawned = on_spawned;
  unlink(options.pid_file.c_str());  // a pid file means this start ran (see Recover)
  if (absl::Status st = RuncFor(r).Exec(r.id(), options, std::move(stdio->child)); !st.ok())
  {
    StopLoggerProcess(r.namespace_(), e.exec_id(), stdio->logger_pid, stdio->logger_start_boottime);
    return st;
  }
  auto pid = oci::ReadPidFile(options.pid_file);
  if (!pid.ok()) return pid.status();
  if (absl::Status st = ReceiveTerminal(*stdio); !st.ok()) return st;
  // The process may be gone already: its exit is tracked all the same, and
  // a start time of 0 names no live process, so nothing signals its pid.
  auto start = bpf::ReadStartBoottime(*pid);
  return SpawnedOf(*pid, start.ok() ? *start : 0, *stdio);
}

absl::Status RuncRuntime::Kill(const embedshim::ContainerRecord& r, int signal, bool all) {
  return RuncFor(r).Kill(r.id(), signal, all);
}

absl::Status RuncRuntime::Delete(const embedshim::ContainerRecord& r, bool force) {
  oci::TeardownOptions options;
  options.force = force;
  // A container that a plain delete left running keeps its logger.
  options.after_delete = [&r](const absl::Status& deleted) {
    if (deleted.ok()) StopLoggerOf(r);
  };
  return oci::TearDown(RuncFor(r), r.id(), r.bundle(), options);
}

absl::Status RuncRuntime::Pause(const embedshim::ContainerRecord& r) {
  return RuncFor(r).Pause(r.id());
}

absl::Status RuncRuntime::Resume(const embedshim::ContainerRecord& r) {
  return RuncFor(r).Resume(r.id());
}

absl::StatusOr<std::vector<pid_t>> RuncRuntime::Ps(const embedshim::ContainerRecord& r) {
  return RuncFor(r).Ps(r.id());
}

namespace {

oci::Runc CriuRuncFor(const embedshim::ContainerRecord& r) {
  oci::RuncConfig config = RuncConfigFor(r);
  config.criu = r.options().criu_path();
  return oci::Runc(std::move(config));
}

oci::CriuOptions CriuOptionsOf(const CheckpointSpec& spec) {
  oci::CriuOptions o;
  o.image_path = spec.image_path;
  o.work_path = spec.work_path;
  o.tcp_established = spec.open_tcp;
  o.ext_unix_sk = spec.external_unix_sockets;
  o.shell_job = spec.terminal;
  o.file_locks = spec.file_locks;
  o.empty_namespaces = spec.empty_namespaces;
  o.manage_cgroups_mode = spec.cgroups_mode;
  return o;
}

// `status` with every `from` in its message replaced by `to`.
absl::Status Renamed(const absl::Status& status, const std::string& from, const std::string& to) {
  std::string text(status.message());
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return absl::Status(status.code(), text);
}

}  // namespace

absl::Status RuncRuntime::Checkpoint(const embedshim::ContainerRecord& r,
                                     const CheckpointSpec& spec) {
  oci::CheckpointOptions options;
  options.criu = CriuOptionsOf(spec);
  options.leave_running = !spec.exit;
  // CRIU's work files and log: a work path given (the request's, else the
  // runtime options') is kept; otherwise they go in a temporary directory, and
  // only the log of a failure stays, as <bundle>/criu-dump.log (as runc-v2).
  if (options.criu.work_path.empty()) options.criu.work_path = r.options().criu_work_path();
  const bool temporary = options.criu.work_path.empty();
  if (temporary) options.criu.work_path = r.bundle() + "/criu-work";
  absl::Status st = CriuRuncFor(r).Checkpoint(r.id(), options);
  if (temporary) {
    const std::string log = options.criu.work_path + "/dump.log";
    const std::string kept = r.bundle() + "/criu-dump.log";
    if (!st.ok() && rename(log.c_str(), kept.c_str()) == 0) st = Renamed(st, log, kept);
    std::error_code ec;
    std::filesystem::remove_all(options.criu.work_path, ec);
  }
  return st;
}

absl::StatusOr<Spawned> RuncRuntime::Restore(const embedshim::ContainerRecord& r,
                                             const std::function<absl::Status(pid_t)>& on_spawned) {
  absl::StatusOr<bool> mounted = MountRootfsOf(r);
  if (!mounted.ok()) return mounted.status();
  auto undo_mounts = [&] {
    if (*mounted) (void)oci::UnmountRootfs(oci::RootfsOf(r.bundle()));
  };
  auto stdio = PrepareStdio({r.stdin(), r.stdout(), r.stderr()}, r.terminal(), StdioOptionsFor(r));
  if (!stdio.ok()) {
    undo_mounts();
    return stdio.status();
  }
  oci::RestoreOptions options;
  options.criu.image_path = r.restore_checkpoint();
  options.criu.parent_path = r.restore_parent_checkpoint();
  // CRIU's restore.log stays there, beside the container.
  options.criu.work_path = r.options().criu_work_path().empty() ? r.bundle() + "/criu-work"
                                                                : r.options().criu_work_path();
  options.pid_file = r.bundle() + "/init.pid";
  options.console_socket = stdio->console ? stdio->console->path() : "";
  options.no_pivot = r.options().no_pivot_root();
  options.on_spawned = on_spawned;
  unlink(options.pid_file.c_str());  // a pid file means this restore ran
  oci::Runc runc = CriuRuncFor(r);
  absl::Status st = runc.Restore(r.id(), r.bundle(), options, std::move(stdio->child));
  absl::StatusOr<pid_t> pid = st.ok() ? oci::ReadPidFile(options.pid_file) : st;
  absl::StatusOr<uint64_t> start = pid.ok() ? bpf::ReadStartBoottime(*pid) : pid.status();
  st = start.ok() ? ReceiveTerminal(*stdio) : start.status();
  if (!st.ok()) {
    TearDownUnborn(runc, r, *stdio, /*unmount=*/*mounted);
    return st;
  }
  return SpawnedOf(*pid, *start, *stdio);
}

absl::Status RuncRuntime::Update(const embedshim::ContainerRecord& r,
                                 const std::string& resources_json) {
  return RuncFor(r).Update(r.id(), resources_json);
}

bool RuncRuntime::WaitsInInit(pid_t pid) {
  auto comm = base::ReadFile(fmt::format("/proc/{}/comm", pid));
  std::string name = comm.ok() ? *comm : "";
  while (!name.empty() && name.back() == '\n') name.pop_back();
  // runc's and crun's init names while they wait for `start`.
  return name.empty() || name.rfind("runc:", 0) == 0 || name == "crun";
}

}  // namespace shim::process
