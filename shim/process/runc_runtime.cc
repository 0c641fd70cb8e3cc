#include "shim/process/runc_runtime.h"

#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/absl_fmt.h"
#include "base/read_file.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "shim/oci/console.h"
#include "shim/oci/mount.h"
#include "shim/oci/runc.h"
#include "shim/oci/stdio.h"
#include "shim/runtime_options.h"

namespace shim::process {

namespace {

// runc-v2 bounds the console's setup by the same 30 s as its fifo opens.
constexpr std::chrono::milliseconds kConsoleTimeout = std::chrono::seconds(30);

oci::Runc RuncFor(const embedshim::ContainerRecord& c) { return oci::Runc(RuncConfigFor(c)); }
std::string RootfsOf(const embedshim::ContainerRecord& c) { return c.bundle() + "/rootfs"; }

// Stdio for a new process: containerd's fifos for the process itself, or,
// with a terminal, a console socket for the runtime and the fifos for the
// keeper to copy to and from the pty.
struct PreparedStdio {
  oci::ChildStdio child;  // the runtime's (and, without a terminal, the process's)
  std::optional<oci::ConsoleSocket> console;
  base::UniqueFd stdin_keepalive;
  TerminalFds terminal;
};

absl::StatusOr<PreparedStdio> PrepareStdio(const oci::StdioPaths& paths, bool terminal) {
  PreparedStdio out;
  // In terminal mode stderr is the pty too (runc-v2 ignores the path).
  auto opened = oci::OpenStdio(terminal ? oci::StdioPaths{paths.in, paths.out, ""} : paths);
  if (!opened.ok()) return opened.status();
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
  return s;
}

}  // namespace

absl::StatusOr<Spawned> RuncRuntime::Create(const embedshim::ContainerRecord& r, bool replayed) {
  const std::string rootfs = RootfsOf(r);
  std::vector<oci::Mount> mounts;
  for (const auto& m : r.rootfs())
    mounts.push_back({m.type(), m.source(), {m.options().begin(), m.options().end()}});
  if (!mounts.empty()) {
    if (absl::Status st = oci::MountRootfs(mounts, rootfs); !st.ok()) return st;
  }
  auto undo_mounts = [&] {
    if (!mounts.empty()) (void)oci::UnmountRootfs(rootfs);
  };
  oci::Runc runc = RuncFor(r);
  oci::CreateOptions options;
  options.pid_file = r.bundle() + "/init.pid";
  ApplyCreateFlags(r.options(), &options);
  absl::StatusOr<PreparedStdio> stdio;
  absl::Status st;
  for (int attempt = 0;; ++attempt) {
    stdio = PrepareStdio({r.stdin(), r.stdout(), r.stderr()}, r.terminal());
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
    (void)runc.Delete(r.id(), /*force=*/true);
    usleep(20'000);  // rare recovery path, on a worker
  }
  absl::StatusOr<pid_t> pid = st.ok() ? oci::ReadPidFile(options.pid_file) : st;
  absl::StatusOr<uint64_t> start = pid.ok() ? bpf::ReadStartBoottime(*pid) : pid.status();
  if (start.ok()) st = ReceiveTerminal(*stdio);
  else st = start.status();
  if (!st.ok()) {
    (void)runc.Delete(r.id(), /*force=*/true);
    undo_mounts();
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
  auto stdio = PrepareStdio({e.stdin(), e.stdout(), e.stderr()}, e.terminal());
  if (!stdio.ok()) return stdio.status();
  oci::ExecOptions options;
  options.process_json = e.spec();
  options.pid_file = ExecPidFile(r.bundle(), e.exec_id());
  options.console_socket = stdio->console ? stdio->console->path() : "";
  options.on_spawned = on_spawned;
  unlink(options.pid_file.c_str());  // a pid file means this start ran (see Recover)
  if (absl::Status st = RuncFor(r).Exec(r.id(), options, std::move(stdio->child)); !st.ok())
    return st;
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
  absl::Status st = RuncFor(r).Delete(r.id(), force);
  if (absl::IsNotFound(st)) st = absl::OkStatus();  // already gone
  absl::Status um = oci::UnmountRootfs(RootfsOf(r));
  return st.ok() ? um : st;
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

bool RuncRuntime::WaitsInInit(pid_t pid) {
  auto comm = base::ReadFile(fmt::format("/proc/{}/comm", pid));
  std::string name = comm.ok() ? *comm : "";
  while (!name.empty() && name.back() == '\n') name.pop_back();
  // runc's and crun's init names while they wait for `start`.
  return name.empty() || name.rfind("runc:", 0) == 0 || name == "crun";
}

}  // namespace shim::process
