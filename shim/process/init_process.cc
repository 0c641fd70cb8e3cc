// The init process of a container: runc create, start, kill, pause, resume
// and delete, each a legal transition (state.h) or a clear error. Its exit
// is init_exit.cc; adopting a dead server's create, init_adoption.cc.
#include <unistd.h>

#include <memory>
#include <utility>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "bpf/pidfd.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "shim/oci/runc.h"
#include "shim/process/clock.h"
#include "shim/process/container.h"
#include "shim/process/exit_report.h"
#include "shim/process/process.h"
#include "shim/process/runtime_marker.h"

namespace shim::process {

namespace task = containerd::task::v2;
namespace events = containerd::events;

const std::string& InitProcess::exec_id() const {
  static const std::string kNone;
  return kNone;
}
const std::string& InitProcess::stdin_path() const { return container_.base().stdin(); }
const std::string& InitProcess::stdout_path() const { return container_.base().stdout(); }
const std::string& InitProcess::stderr_path() const { return container_.base().stderr(); }
bool InitProcess::terminal() const { return container_.base().terminal(); }

void InitProcess::Restore(const embedshim::ContainerRecord& r) {
  pid_ = r.pid();
  start_boottime_ = r.start_boottime();
  exit_status_ = r.exit_status();
  exited_at_ = r.exited_at_unix_nano();
  // (A created init waiting for its restore has no pid yet.)
  if (pid() > 0 && (alive() || status_ == Status::kCreated)) container_.router().Add(pid(), this);
}

bool InitProcess::restore_pending() const {
  return !container_.base().restore_checkpoint().empty() && !container_.base().started();
}

// TaskCreate, as runc-v2 sends it: the pid (0 for a restore, which runs at
// Start) and the checkpoint it restores from.
void InitProcess::PublishCreated(const task::CreateTaskRequest& req) {
  events::TaskCreate ev;
  ev.set_container_id(container_.id());
  ev.set_bundle(container_.bundle());
  *ev.mutable_rootfs() = req.rootfs();
  ev.mutable_io()->set_stdin(req.stdin());
  ev.mutable_io()->set_stdout(req.stdout());
  ev.mutable_io()->set_stderr(req.stderr());
  ev.mutable_io()->set_terminal(req.terminal());
  ev.set_pid(pid_);
  ev.set_checkpoint(container_.base().restore_checkpoint());
  container_.env().events.Publish(container_.ns(), "/tasks/create", ev);
}

void InitProcess::Create(bool replayed, const task::CreateTaskRequest& req, Then<pid_t> then) {
  Environment& env = container_.env();
  if (restore_pending()) {
    // As runc-v2: a restore runs nothing until Start, which runs `runc
    // restore`; until then the init has no pid.
    Apply(Event::kCreated);
    container_.Persist();
    PublishCreated(req);
    base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "created for a restore from {}",
           container_.base().restore_checkpoint());
    return then(pid());
  }
  // If this process dies during `runc create`, the next one finds a
  // creating record and undoes it before the replayed Create runs again.
  container_.Persist();
  HoldOutputWhileStarting();
  env.pool.Run<std::shared_ptr<absl::StatusOr<Spawned>>>(
      [&runtime = env.runtime, record = container_.Record(), replayed] {
        return std::make_shared<absl::StatusOr<Spawned>>(runtime.Create(record, replayed));
      },
      [this, req, then = std::move(then)](std::shared_ptr<absl::StatusOr<Spawned>> res) {
        ReleaseOutputHold();  // the init holds the fifos now, or nobody needs them
        // Until its outcome is persisted, a server that dies leaves the
        // marker: the next one adopts this create rather than undo it under
        // a runc that may still run (SettleOrphanedCreate).
        const std::string marker = CreateRuntimeMarker(container_.bundle());
        if (!res->ok()) {
          unlink(marker.c_str());
          base::LogFor(base::LogLevel::kError, container_.ns(), container_.id(), "create failed: {}",
                 res->status());
          Apply(Event::kDelete);  // nothing mounted or created remains
          return then(res->status());
        }
        Spawned& s = **res;
        TakeCreatedInit(s);
        // Persisted below with the pid: a later Delete, by whichever server,
        // makes sure the logger is gone.
        container_.mutable_base().set_logger_pid(s.logger_pid);
        container_.mutable_base().set_logger_start_boottime(s.logger_start_boottime);
        Apply(Event::kCreated);
        container_.WatchOom(/*recovered=*/false);
        container_.Persist();
        unlink(marker.c_str());

        PublishCreated(req);
        base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "created pid={}", pid_);
        then(pid());
      });
}

void InitProcess::TakeCreatedInit(Spawned& s) {
  // runc holds the init until `runc start`: tracking it now misses nothing.
  if (absl::Status st = container_.env().exits.Track(s.pid, s.start_boottime); !st.ok())
    base::LogFor(base::LogLevel::kError, container_.ns(), container_.id(), "tracking pid {}: {}", s.pid, st);
  pid_ = static_cast<uint32_t>(s.pid);
  start_boottime_ = s.start_boottime;
  container_.router().Add(s.pid, this);
  KeepStdio(s);
}

void InitProcess::Start(bool replayed, Then<pid_t> then) {
  if (replayed && container_.base().started()) return then(pid());  // the earlier server did
  if (absl::Status st = Check(Event::kStart); !st.ok()) return then(st);
  if (restore_pending()) return StartRestore(replayed, std::move(then));
  Apply(Event::kStart);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record(), replayed] {
        return runtime.Start(record, replayed);
      },
      [this, then = std::move(then)](absl::Status st) {
        if (st.ok()) {
          Apply(Event::kStarted);
          MarkStarted();
          base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "started pid={}", pid_);
        } else {
          Apply(Event::kStartFailed);
          base::LogFor(base::LogLevel::kError, container_.ns(), container_.id(), "start failed: {}", st);
        }
        ReleaseHeldExit();
        // Last: the reply lets the container's next call run.
        if (st.ok()) then(pid());
        else then(st);
      });
}

void InitProcess::MarkStarted() {
  if (status_ == Status::kCreated) {  // recovery: the dead server's `runc start` ran
    Apply(Event::kStart);
    Apply(Event::kStarted);
  }
  container_.mutable_base().set_started(true);
  Environment& env = container_.env();
  if (!env.events.Spooled("/tasks/start", container_.ns(), container_.id())) {
    events::TaskStart ev;  // spooled first, then the state
    ev.set_container_id(container_.id());
    ev.set_pid(pid_);
    env.events.Publish(container_.ns(), "/tasks/start", ev);
  }
  container_.Persist();
}

void InitProcess::Kill(int signal, bool all, bool replayed, ThenStatus then) {
  if (replayed && status_ == Status::kStopped) return then(absl::OkStatus());  // it worked
  if (absl::Status st = Check(Event::kKill); !st.ok()) return then(st);
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "kill signal={} all={}", signal, all);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record(), signal, all] {
        return runtime.Kill(record, signal, all);
      },
      [this, replayed, then = std::move(then)](absl::Status st) {
        // A replayed Kill that finds the process gone: the dead server's
        // `runc kill`, an orphan now, got there first. It worked.
        if (replayed && absl::IsNotFound(st)) st = absl::OkStatus();
        if (!st.ok()) base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(), "kill: {}", st);
        then(st);
      });
}

void InitProcess::Freeze(Event event, bool replayed, ThenStatus then) {
  const bool pause = event == Event::kPause;
  const Status target = pause ? Status::kPaused : Status::kRunning;
  if (replayed && status_ == target) return then(absl::OkStatus());  // it worked the first time
  if (absl::Status st = Check(event); !st.ok()) return then(st);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record(), pause] {
        return pause ? runtime.Pause(record) : runtime.Resume(record);
      },
      [this, replayed, event, pause, then = std::move(then)](absl::Status st) {
        // A replayed one: the dead server's `runc pause|resume`, an orphan
        // now, may have done it first, and runc refuses to do it twice.
        if (!st.ok() && replayed &&
            st.message().find(pause ? "not running" : "not paused") != absl::string_view::npos)
          st = absl::OkStatus();
        if (!st.ok()) {
          base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(), "{}: {}",
                 pause ? "pause" : "resume", st);
          return then(st);
        }
        if (Check(event).ok()) Apply(event);  // an exit meanwhile wins
        base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "{}",
               pause ? "paused" : "resumed");
        Environment& env = container_.env();
        if (pause) {
          events::TaskPaused ev;
          ev.set_container_id(container_.id());
          env.events.Publish(container_.ns(), "/tasks/paused", ev);
        } else {
          events::TaskResumed ev;
          ev.set_container_id(container_.id());
          env.events.Publish(container_.ns(), "/tasks/resumed", ev);
        }
        container_.Persist();
        then(absl::OkStatus());
      });
}

void InitProcess::Update(std::string resources_json, ThenStatus then) {
  if (absl::Status st = Check(Event::kUpdate); !st.ok()) return then(st);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record(),
       resources = std::move(resources_json)] { return runtime.Update(record, resources); },
      [this, then = std::move(then)](absl::Status st) {
        // runc puts the old resources back when the kernel refuses new ones:
        // a failed update leaves the container as it was.
        if (!st.ok()) base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(), "update: {}", st);
        else base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "updated");
        then(st);
      });
}

void InitProcess::Delete(Then<task::DeleteResponse> then) {
  if (absl::Status st = Check(Event::kDelete); !st.ok()) return then(st);
  Environment& env = container_.env();
  const bool never_started = status_ == Status::kCreated;
  if (never_started) {
    // `runc delete` kills the waiting init; that is no exit to report.
    (void)env.exits.Untrack(pid());
    container_.router().Remove(pid(), this);
  }
  WhenGone([this, never_started, then = std::move(then)]() mutable {
    Environment& env = container_.env();
    env.pool.Run<absl::Status>(
        [&runtime = env.runtime, record = container_.Record(), never_started] {
          return runtime.Delete(record, /*force=*/never_started);
        },
        [this, never_started, then = std::move(then)](absl::Status st) {
          if (!st.ok()) {
            base::LogFor(base::LogLevel::kError, container_.ns(), container_.id(), "delete failed: {}", st);
            return then(st);
          }
          if (never_started) exited_at_ = NowUnixNano();
          Apply(Event::kDelete);
          DropStdio();
          for (const auto& [id, e] : container_.execs()) e->DropStdio();
          for (auto& w : waiters_) w.Reply(absl::NotFoundError("container deleted"));
          waiters_.clear();
          container_.env().events.Publish(container_.ns(), "/tasks/delete",
                                          ExitEventOf<events::TaskDelete>(End()));
          base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "deleted");
          then(DeleteResponseOf(End()));
        });
  });
}

void InitProcess::StartRestore(bool replayed, Then<pid_t> then) {
  Apply(Event::kStart);
  HoldOutputWhileStarting();
  // Nothing waits for `start` after `runc restore --detach`: the restored
  // init may exit before its pid is known. So runc is a tracked spawner and
  // the exits of pids not known yet are held, as for an exec's start.
  container_.router().BeginSpawn();
  Environment& env = container_.env();
  env.pool.Run<std::shared_ptr<absl::StatusOr<Spawned>>>(
      [&runtime = env.runtime, &exits = env.exits, record = container_.Record(), replayed] {
        // A dead server's restore that finished: its init runs. Adopted.
        if (replayed) {
          auto pid = oci::ReadPidFile(record.bundle() + "/init.pid");
          auto start = pid.ok() ? bpf::ReadStartBoottime(*pid) : pid.status();
          if (start.ok()) {
            Spawned s;
            s.pid = *pid;
            s.start_boottime = *start;
            return std::make_shared<absl::StatusOr<Spawned>>(std::move(s));
          }
        }
        return std::make_shared<absl::StatusOr<Spawned>>(runtime.Restore(
            record, [&exits](pid_t runtime_pid) { return exits.TrackSpawner(runtime_pid); }));
      },
      [this, then = std::move(then)](std::shared_ptr<absl::StatusOr<Spawned>> res) {
        Environment& env = container_.env();
        ReleaseOutputHold();
        if (!res->ok()) {
          Apply(Event::kStartFailed);
          container_.router().EndSpawn(0);
          base::LogFor(base::LogLevel::kError, container_.ns(), container_.id(), "restore failed: {}",
                 res->status());
          return then(res->status());
        }
        Spawned& s = **res;
        pid_ = static_cast<uint32_t>(s.pid);
        start_boottime_ = s.start_boottime;
        // Inherited from runc already; tracked by its own name too, in case
        // the spawner's budget ran out on CRIU's helpers.
        (void)env.exits.Track(s.pid, s.start_boottime);
        container_.router().Add(s.pid, this);
        KeepStdio(s);
        container_.mutable_base().set_logger_pid(s.logger_pid);
        container_.mutable_base().set_logger_start_boottime(s.logger_start_boottime);
        Apply(Event::kStarted);
        container_.WatchOom(/*recovered=*/false);
        MarkStarted();  // TaskStart, then the record
        base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "restored pid={}", pid_);
        container_.router().EndSpawn(pid());
        ReleaseHeldExit();
        then(pid());  // last: the reply lets the container's next call run
      });
}

void InitProcess::Checkpoint(const CheckpointSpec& spec, ThenStatus then) {
  if (absl::Status st = Check(Event::kCheckpoint); !st.ok()) return then(st);
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "checkpoint to {} exit={}",
         spec.image_path, spec.exit);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record(), spec] {
        return runtime.Checkpoint(record, spec);
      },
      [this, then = std::move(then)](absl::Status st) {
        // A failed checkpoint leaves the container as it was: runc with
        // CRIU's dump failing kills nothing.
        if (!st.ok()) base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(), "checkpoint: {}", st);
        else base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "checkpointed");
        then(st);
      });
}

}  // namespace shim::process
