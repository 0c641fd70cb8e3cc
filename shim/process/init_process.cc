// The init process of a container: runc create, start, kill, pause, resume
// and delete, each a legal transition (state.h) or a clear error.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "base/absl_fmt.h"
#include "base/event_loop.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "bpf/pidfd.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "shim/oci/runc.h"
#include "shim/oci/stdio_uri.h"
#include "shim/process/clock.h"
#include "shim/process/container.h"
#include "shim/process/exit_report.h"
#include "shim/process/process.h"
#include "shim/process/runtime_marker.h"

namespace shim::process {

namespace task = containerd::task::v2;
namespace events = containerd::events;

namespace {
// A pid-namespace init is gone only once the kernel has killed and reaped
// the rest of its namespace; `runc delete` refuses until then.
constexpr absl::Duration kInitGoneLimit = absl::Seconds(10);
// How long recovery waits for a dead server's `runc create` (as for an
// exec's `runc exec`: runc's own limit).
constexpr absl::Duration kOrphanedCreateLimit = absl::Seconds(60);
}  // namespace

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
        Environment& env = container_.env();
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

void InitProcess::PublishCreatedFromRecord() {
  const embedshim::ContainerRecord& r = container_.base();
  task::CreateTaskRequest req;
  req.set_stdin(r.stdin());
  req.set_stdout(r.stdout());
  req.set_stderr(r.stderr());
  req.set_terminal(r.terminal());
  for (const auto& m : r.rootfs()) {
    auto* mount = req.add_rootfs();
    mount->set_type(m.type());
    mount->set_source(m.source());
    for (const auto& o : m.options()) mount->add_options(o);
  }
  PublishCreated(req);
}

namespace {
// A binary:// logger is started with the create; the dead server's is
// known to nobody now, so such a create is not adopted.
bool HasLogger(const embedshim::ContainerRecord& r) {
  for (const std::string* uri : {&r.stdout(), &r.stderr()}) {
    auto parsed = oci::ParseStdioUri(*uri);
    if (parsed.ok() && parsed->scheme == "binary") return true;
  }
  return false;
}

// The shim's own writer of a created init's stdin fifo (see oci::OpenStdio):
// the dead server's went with it. The init holds the read end, so a
// non-blocking open finds a reader.
base::UniqueFd ReopenStdinKeepalive(const std::string& path) {
  struct stat st;
  if (path.empty() || path[0] != '/' || stat(path.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode))
    return {};
  base::UniqueFd fd(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd) fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd;
}
}  // namespace

std::optional<Spawned> InitProcess::AdoptOrphanedCreate(Runtime& runtime,
                                                        const embedshim::ContainerRecord& r) {
  // Rare (a server killed during `runc create`), bounded, on a worker.
  (void)WaitForMarkedRuntime(CreateRuntimeMarker(r.bundle()), kOrphanedCreateLimit);
  // A terminal's pty master was sent to the dead server.
  if (r.terminal() || HasLogger(r)) return std::nullopt;
  auto pid = oci::ReadPidFile(r.bundle() + "/init.pid");
  if (!pid.ok()) return std::nullopt;  // that create failed
  auto start = bpf::ReadStartBoottime(*pid);
  if (!start.ok() || !runtime.WaitsInInit(*pid)) return std::nullopt;
  Spawned s;
  s.pid = *pid;
  s.start_boottime = *start;
  s.stdin_keepalive = ReopenStdinKeepalive(r.stdin());
  return s;
}

void InitProcess::SettleOrphanedCreate(Then<bool> then) {
  base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
         "a create was in flight: waiting for the runc create the previous server started");
  Environment& env = container_.env();
  env.pool.Run<std::shared_ptr<std::optional<Spawned>>>(
      [&runtime = env.runtime, record = container_.Record()] {
        auto adopted = std::make_shared<std::optional<Spawned>>(AdoptOrphanedCreate(runtime, record));
        // Its runc has finished: undoing what it left races nothing now.
        if (!*adopted) (void)runtime.Delete(record, /*force=*/true);
        return adopted;
      },
      [this, then = std::move(then)](std::shared_ptr<std::optional<Spawned>> adopted) {
        Environment& env = container_.env();
        const std::string marker = CreateRuntimeMarker(container_.bundle());
        if (!*adopted) {
          unlink(marker.c_str());
          base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
                 "the create the previous server left in flight is undone");
          return then(false);
        }
        Spawned& s = **adopted;
        TakeCreatedInit(s);
        DropOutputHoldsOfDeadServer();  // the init holds its output now
        Apply(Event::kCreated);
        container_.WatchOom(/*recovered=*/false);
        // Spooled first, then persisted: a server that dies in between finds
        // the marker again, adopts again, and finds TaskCreate spooled.
        if (!env.events.Spooled("/tasks/create", container_.ns(), container_.id()))
          PublishCreatedFromRecord();
        container_.Persist();
        unlink(marker.c_str());
        base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
               "adopted pid {}, created by the previous server's runc create", pid_);
        then(true);
      });
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

void InitProcess::OnExecExited() {
  if (!exit_after_execs_ || container_.AnyExecAlive()) return;
  bpf::ExitRecord exit = *exit_after_execs_;
  exit_after_execs_.reset();
  ApplyExit(exit);
}

void InitProcess::ApplyExit(const bpf::ExitRecord& exit) {
  if (kill_all_on_exit_ && !killed_all_) return KillAllThenApplyExit(exit);
  if (container_.AnyExecAlive()) {
    // The init's TaskExit is the container's last (runc-v2 >= 1.6.36): it
    // waits for the execs, which cannot outlive it. In a private pid
    // namespace the kernel kills them; sharing the host's, we do. The exit
    // stays in the monitor's map meanwhile, so a restarted server holds it
    // again.
    if (!exit_after_execs_) {
      base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(),
             "init exited; its exit waits for the execs still running");
      for (const auto& [id, e] : container_.execs()) {
        if (!e->alive() || e->pid() <= 0) continue;
        if (auto pidfd = bpf::PidfdIfSameLive(e->pid(), e->start_boottime()); pidfd.ok())
          (void)syscall(SYS_pidfd_send_signal, pidfd->get(), SIGKILL, nullptr, 0);
      }
    }
    exit_after_execs_ = exit;
    return;
  }
  if (exit_waits_for_output_) return;  // the monitor reports at least once
  exit_waits_for_output_ = true;
  WhenOutputRead([this, exit] {
    exit_waits_for_output_ = false;
    FinishExit(exit);
  });
}

void InitProcess::FinishExit(const bpf::ExitRecord& exit) {
  SetExit(exit);
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "exited pid={} status={}", exit.pid,
         exit_status_);
  // Order matters across a crash: the event is spooled, then the state is
  // persisted, then the exit record is forgotten. A server that dies between
  // any two steps is followed by one that replays the exit, finds the event
  // already spooled, and does not send it twice.
  Environment& env = container_.env();
  // An OOM kill of the init is counted before it exits: TaskOOM goes first,
  // as with runc-v2.
  container_.CheckOom();
  if (!env.events.Spooled("/tasks/exit", container_.ns(), container_.id(), container_.id()))
    env.events.Publish(container_.ns(), "/tasks/exit", ExitEventOf<events::TaskExit>(End()));
  container_.Persist();
  (void)env.exits.Forget(exit.pid);
  container_.router().Remove(exit.pid, this);
  AnswerWaiters();
}

// The exit monitor reports an exit in do_exit, before the kernel closes the
// process's files (and, for a pid namespace's init, before it kills the rest
// of the namespace), and the TaskExit reached containerd within a
// millisecond. containerd 1.6's CRI closes a container's output fifos as soon
// as it handles TaskExit, so its copy, not yet at EOF, lost the output's end
// ("Failed to pipe stdout of container ...: file already closed"). So the
// exit waits, first until the init is wholly gone (its pidfd: its files are
// closed, and so are those of the rest of its pid namespace), then until no
// output fifo has a reader: containerd closes its reader once it has read to
// EOF. That close is an inotify event (IN_CLOSE_NOWRITE; the container's own
// fds are O_RDWR, and so is nothing else's we wait for); whether a reader is
// left, a non-blocking O_WRONLY open tells (ENXIO: none), and its own close
// (IN_CLOSE_WRITE) wakes nobody. A reader that never reads, or processes of
// a shared pid namespace that keep the fifos, cost kOutputReadLimit.
namespace {
constexpr absl::Duration kOutputReadLimit = absl::Seconds(1);

bool FifoHasReader(const std::string& path) {
  base::UniqueFd probe(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  return probe.valid();  // ENXIO: no reader; anything else: nothing to wait for
}
}  // namespace

void InitProcess::WhenOutputRead(std::function<void()> then) {
  struct Wait {
    base::UniqueFd pidfd;    // until the init is wholly gone
    base::UniqueFd inotify;  // readers' closes
    std::vector<std::string> fifos;
    std::function<void()> then;
    base::EventLoop* loop;
    void Check() {
      if (pidfd.valid()) return;
      if (std::none_of(fifos.begin(), fifos.end(), FifoHasReader)) Fire();
    }
    void Fire() {
      if (!then) return;
      for (base::UniqueFd* fd : {&pidfd, &inotify}) {
        if (fd->valid()) loop->Remove(fd->get());
        fd->Reset();
      }
      std::exchange(then, nullptr)();
    }
  };
  base::EventLoop& loop = container_.env().loop;
  auto wait = std::make_shared<Wait>(Wait{{}, {}, {}, std::move(then), &loop});
  for (const std::string* path : {&stdout_path(), &stderr_path()}) {
    struct stat st;
    if (!path->empty() && (*path)[0] == '/' && stat(path->c_str(), &st) == 0 &&
        S_ISFIFO(st.st_mode))
      wait->fifos.push_back(*path);
  }
  if (wait->fifos.empty()) return wait->Fire();
  // Watch first, then look: a reader that closes in between is not missed.
  wait->inotify.Reset(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!wait->inotify) return wait->Fire();
  for (const std::string& fifo : wait->fifos) {
    if (inotify_add_watch(wait->inotify.get(), fifo.c_str(), IN_CLOSE_NOWRITE) < 0)
      return wait->Fire();
  }
  if (absl::Status st = loop.Add(wait->inotify.get(), EPOLLIN,
                                 [wait](uint32_t) {
                                   char buf[4096];
                                   while (read(wait->inotify.get(), buf, sizeof buf) > 0) {
                                   }
                                   wait->Check();
                                 });
      !st.ok())
    return wait->Fire();
  if (auto pidfd = bpf::PidfdIfSameLive(pid(), start_boottime_); pidfd.ok()) {
    wait->pidfd = std::move(*pidfd);
    if (absl::Status st = loop.Add(wait->pidfd.get(), EPOLLIN,
                                   [wait](uint32_t) {
                                     wait->loop->Remove(wait->pidfd.get());
                                     wait->pidfd.Reset();
                                     wait->Check();
                                   });
        !st.ok())
      return wait->Fire();
  }
  wait->Check();
  if (!wait->then) return;
  loop.RunAfter(kOutputReadLimit, [wait, ns = container_.ns(), id = container_.id()] {
    if (!wait->then) return;
    base::LogFor(base::LogLevel::kWarn, ns, id, "the output is still held {} ms after the exit; reporting it",
           absl::ToInt64Milliseconds(kOutputReadLimit));
    wait->Fire();
  });
}

void InitProcess::WhenGone(std::function<void()> then) {
  if (status_ != Status::kStopped) return then();
  auto pidfd = bpf::PidfdIfSameLive(pid(), start_boottime_);
  if (!pidfd.ok()) return then();  // gone already, or the pid is another process's now
  // Whichever comes first, the pidfd or the time limit, runs `then`.
  struct Wait {
    base::UniqueFd pidfd;
    std::function<void()> then;
    base::EventLoop* loop;
    void Fire() {
      if (!then) return;
      loop->Remove(pidfd.get());
      pidfd.Reset();
      std::exchange(then, nullptr)();
    }
  };
  base::EventLoop& loop = container_.env().loop;
  auto wait = std::make_shared<Wait>(Wait{std::move(*pidfd), std::move(then), &loop});
  if (absl::Status st = loop.Add(wait->pidfd.get(), EPOLLIN, [wait](uint32_t) { wait->Fire(); });
      !st.ok())
    return wait->Fire();
  loop.RunAfter(kInitGoneLimit, [wait, ns = container_.ns(), id = container_.id(), pid = pid_] {
    if (!wait->then) return;
    base::LogFor(base::LogLevel::kWarn, ns, id,
           "init pid {} exited {} s ago and its pid namespace is still not empty", pid,
           absl::ToInt64Seconds(kInitGoneLimit));
    wait->Fire();
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

void InitProcess::KillAllThenApplyExit(const bpf::ExitRecord& exit) {
  exit_after_kill_all_ = exit;
  if (kill_all_in_flight_) return;
  kill_all_in_flight_ = true;
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(),
         "init pid {} exited without a pid namespace of its own: killing the rest of its cgroup",
         exit.pid);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record()] {
        return runtime.Kill(record, SIGKILL, /*all=*/true);
      },
      [this](absl::Status st) {
        kill_all_in_flight_ = false;
        killed_all_ = true;
        // NotFound: nothing left to kill, or no container any more.
        if (!st.ok() && !absl::IsNotFound(st))
          base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
                 "killing what the init left: {}", st);
        bpf::ExitRecord exit = *exit_after_kill_all_;
        exit_after_kill_all_.reset();
        if (status_ != Status::kStopped && status_ != Status::kDeleted) ApplyExit(exit);
      });
}

}  // namespace shim::process
