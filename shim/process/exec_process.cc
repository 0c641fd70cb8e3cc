// An exec process: recorded by Exec (Container::AddExec), `runc exec
// --detach` at Start, signalled directly (a pidfd), deleted from its
// container. Its exit is tracked from birth: runc is a tracked spawner.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <optional>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "bpf/pidfd.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "shim/oci/runc.h"
#include "shim/process/clock.h"
#include "shim/process/container.h"
#include "shim/process/process.h"
#include "shim/process/runtime_marker.h"

namespace shim::process {

namespace task = containerd::task::v2;
namespace events = containerd::events;

namespace {
// How long a replayed Start waits for a dead server's `runc exec`.
constexpr absl::Duration kOrphanedRuntimeLimit = absl::Seconds(60);
}  // namespace

embedshim::ExecRecord ExecProcess::Record() const {
  embedshim::ExecRecord r = record_;
  r.set_status(ToRecord(status_));
  r.set_pid(pid_);
  r.set_start_boottime(start_boottime_);
  r.set_exit_status(exit_status_);
  r.set_exited_at_unix_nano(exited_at_);
  return r;
}

std::string ExecProcess::PidFile() const {
  return ExecPidFile(container_.bundle(), exec_id());
}

void ExecProcess::Start(bool replayed, Then<pid_t> then) {
  if (replayed && (status_ == Status::kRunning || status_ == Status::kStopped))
    return then(pid());  // the earlier server started it
  if (absl::Status st = Check(Event::kStart); !st.ok()) return then(st);
  const Status init = container_.init().status();
  if (init != Status::kRunning && init != Status::kPaused && init != Status::kCreated)
    return then(absl::FailedPreconditionError(fmt::format(
        "cannot start exec {}: container {} is {}", exec_id(), container_.id(), Name(init))));
  Apply(Event::kStart);
  HoldOutputWhileStarting();
  Environment& env = container_.env();
  container_.router().BeginSpawn();
  env.pool.Run<std::shared_ptr<absl::StatusOr<Spawned>>>(
      [&runtime = env.runtime, &exits = env.exits, container = container_.Record(),
       exec = Record(), marker = RuntimeMarker(), pid_file = PidFile(), replayed] {
        // A replayed Start: the dead server's `runc exec` may live on as an
        // orphan. It is waited for, and what it started is adopted.
        if (replayed) {
          if (auto adopted = AdoptOrphanedStart(marker, pid_file))
            return std::make_shared<absl::StatusOr<Spawned>>(std::move(*adopted));
        }
        // Tracked before runc can fork: the exec'd process's exit, however
        // soon it comes, is in the monitor's map under its own pid. And
        // named in a file, so that a server that dies meanwhile is followed
        // by one that waits for this runc rather than running another.
        auto track = [&exits, &marker](pid_t runtime_pid) {
          WriteRuntimeMarker(marker, runtime_pid);
          return exits.TrackSpawner(runtime_pid);
        };
        auto spawned = std::make_shared<absl::StatusOr<Spawned>>(
            runtime.Exec(container, exec, track));
        unlink(marker.c_str());
        return spawned;
      },
      [this, then = std::move(then)](std::shared_ptr<absl::StatusOr<Spawned>> res) {
        ReleaseOutputHold();  // runc's process holds the fifos now, or nobody needs them
        if (!res->ok()) {
          Apply(Event::kStartFailed);
          container_.router().EndSpawn(0);
          base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(), "exec {} start failed: {}",
                 exec_id(), res->status());
          return then(res->status());
        }
        Spawned& s = **res;
        pid_ = static_cast<uint32_t>(s.pid);
        start_boottime_ = s.start_boottime;
        container_.router().Add(s.pid, this);
        KeepStdio(s);
        Apply(Event::kStarted);
        // Started: no replay runs it again, and CRI probes exec every few
        // seconds, so the record (rewritten at every step) drops the spec.
        record_.clear_spec();
        PublishStarted();
        container_.Persist();
        base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "exec {} started pid={}",
               exec_id(), pid_);
        // Exits that came before the pid was known: applied after the start.
        container_.router().EndSpawn(pid());
        ReleaseHeldExit();
        then(pid());  // last: the reply lets the container's next call run
      });
}

void ExecProcess::PublishStarted() {
  Environment& env = container_.env();
  // Spooled first, then persisted: a server that dies in between is followed
  // by one that finds it spooled.
  if (env.events.Spooled("/tasks/exec-started", container_.ns(), container_.id(), exec_id()))
    return;
  events::TaskExecStarted ev;
  ev.set_container_id(container_.id());
  ev.set_exec_id(exec_id());
  ev.set_pid(pid_);
  env.events.Publish(container_.ns(), "/tasks/exec-started", ev);
}

void ExecProcess::Kill(int signal, bool /*all*/, bool replayed, ThenStatus then) {
  if (replayed && status_ == Status::kStopped) return then(absl::OkStatus());
  if (absl::Status st = Check(Event::kKill); !st.ok()) return then(st);
  // runc-v2 signals an exec with kill(2); a pidfd cannot hit a reused pid.
  auto pidfd = bpf::PidfdIfSameLive(pid(), start_boottime_);
  if (!pidfd.ok()) return then(absl::NotFoundError("process already finished"));
  if (syscall(SYS_pidfd_send_signal, pidfd->get(), signal, nullptr, 0) != 0) {
    if (errno == ESRCH) return then(absl::NotFoundError("process already finished"));
    return then(absl::UnknownError(
        fmt::format("kill exec {}: {}", exec_id(), std::strerror(errno))));
  }
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "exec {} kill signal={}", exec_id(),
         signal);
  then(absl::OkStatus());
}

void ExecProcess::ApplyExit(const bpf::ExitRecord& exit) {
  SetExit(exit);
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "exec {} exited pid={} status={}",
         exec_id(), exit.pid, exit_status_);
  // Spool, persist, forget: as the init's exit (see InitProcess::ApplyExit).
  Environment& env = container_.env();
  if (!env.events.Spooled("/tasks/exit", container_.ns(), container_.id(), exec_id()))
    env.events.Publish(container_.ns(), "/tasks/exit", ExitEventOf<events::TaskExit>(End()));
  container_.Persist();
  (void)env.exits.Forget(exit.pid);
  container_.router().Remove(exit.pid, this);
  AnswerWaiters();
  container_.init().OnExecExited();
}

absl::StatusOr<task::DeleteResponse> ExecProcess::Delete(bool replayed) {
  if (replayed && status_ == Status::kDeleted) return DeleteResponseOf(End());  // the earlier server did
  if (absl::Status st = Check(Event::kDelete); !st.ok()) return st;
  DropStdio();
  unlink(PidFile().c_str());
  Apply(Event::kDelete);
  record_.set_deleted_at_unix_nano(NowUnixNano());
  container_.Persist();
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "exec {} deleted", exec_id());
  return DeleteResponseOf(End());
}

std::string ExecProcess::RuntimeMarker() const {
  return fmt::format("{}/{}.runtime-pid", container_.bundle(), exec_id());
}

std::optional<Spawned> ExecProcess::AdoptOrphanedStart(const std::string& marker,
                                                       const std::string& pid_file) {
  // Rare (a server killed during `runc exec`), bounded, on a worker.
  (void)WaitForMarkedRuntime(marker, kOrphanedRuntimeLimit);
  auto pid = oci::ReadPidFile(pid_file);
  if (!pid.ok()) return std::nullopt;  // it started nothing: start afresh
  unlink(marker.c_str());
  Spawned s;
  s.pid = *pid;
  auto start = bpf::ReadStartBoottime(*pid);
  s.start_boottime = start.ok() ? *start : 0;
  return s;
}

void ExecProcess::Recover() {
  if (status_ != Status::kCreated) return;
  // A start was in flight when the server died. A `runc exec` still running
  // as an orphan is waited for (AdoptWhenRuntimeEnds); one that finished
  // left its pid file. The process's exit, if it came, waits in the
  // monitor's map (runc was a tracked spawner), replayed after this.
  if (LiveRuntime(RuntimeMarker())) return AdoptWhenRuntimeEnds();
  unlink(RuntimeMarker().c_str());
  auto pid = oci::ReadPidFile(PidFile());
  if (!pid.ok()) return;  // not started: a replayed Start runs it
  auto start = bpf::ReadStartBoottime(*pid);
  AdoptStarted(*pid, start.ok() ? *start : 0);
}

void ExecProcess::AdoptWhenRuntimeEnds() {
  // The exec'd process may have exited already (runc outlives it) or exit
  // before the orphan ends: its exit, replayed or drained meanwhile, is held
  // as for any start in flight, not forgotten as an unknown pid's. This
  // server adopts it itself, holding the container's turn, so the replayed
  // Start (queued behind) finds the outcome; nothing depends on that replay.
  container_.router().BeginSpawn();
  container_.queue().Run([this](SerialQueue::Turn turn) {
    // The dead server's holds (same names) become ours, released below as a
    // start releases its own.
    HoldOutputWhileStarting();
    container_.env().pool.Run<std::shared_ptr<std::optional<Spawned>>>(
        [marker = RuntimeMarker(), pid_file = PidFile()] {
          return std::make_shared<std::optional<Spawned>>(AdoptOrphanedStart(marker, pid_file));
        },
        [this, turn = std::make_shared<SerialQueue::Turn>(std::move(turn))](
            std::shared_ptr<std::optional<Spawned>> adopted) {
          ReleaseOutputHold();
          // Without a pid file the exec stays created: the replayed Start
          // (nothing else ran in this turn) runs it afresh.
          pid_t started = 0;
          if (*adopted && status_ == Status::kCreated) {
            started = (*adopted)->pid;
            AdoptStarted(started, (*adopted)->start_boottime);
          }
          container_.router().EndSpawn(started);
        });
  });
}

void ExecProcess::AdoptStarted(pid_t pid, uint64_t start_boottime) {
  pid_ = static_cast<uint32_t>(pid);
  start_boottime_ = start_boottime;
  Apply(Event::kStart);
  Apply(Event::kStarted);
  // The process holds its output now (or has ended it): the dead server's
  // holds would keep the reader from its EOF, and the replayed Start, which
  // finds the exec started, takes none to release.
  DropOutputHoldsOfDeadServer();
  record_.clear_spec();
  container_.router().Add(pid, this);
  base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
         "exec {} was started by the previous server: pid {}", exec_id(), pid_);
  PublishStarted();
  container_.Persist();
}

}  // namespace shim::process
