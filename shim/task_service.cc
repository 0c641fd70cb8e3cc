#include "shim/task_service.h"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <unistd.h>

#include "base/absl_fmt.h"
#include "bpf/pidfd.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "google/protobuf/empty.pb.h"
#include "shim.pb.h"
#include "shim/cgroup_metrics.h"
#include "shim/clock.h"
#include "shim/exit_report.h"
#include "shim/log.h"
#include "shim/oci/mount.h"
#include "shim/oci/runc.h"
#include "shim/oci/stdio.h"
#include "shim/paths.h"
#include "shim/runtime_options.h"

namespace shim {

namespace task = containerd::task::v2;
namespace events = containerd::events;

struct TaskService::Call {
  std::string ns;
  std::string payload;
  ttrpc::Responder responder;
  bool replayed = false;  // an earlier server may already have acted on it

  template <class Req>
  absl::StatusOr<Req> Parse() const {
    Req req;
    if (!req.ParseFromString(payload))
      return absl::InvalidArgumentError(
          fmt::format("cannot decode {}", Req::descriptor()->full_name()));
    return req;
  }
  void Reply(const google::protobuf::Message& resp) const {
    responder.Reply(resp.SerializeAsString());
  }
  void Fail(const absl::Status& status) const { responder.Reply(status); }
};

namespace {

constexpr char kNamespaceKey[] = "containerd-namespace-ttrpc";

oci::Runc RuncFor(const embedshim::ContainerRecord& r) { return oci::Runc(RuncConfigFor(r)); }

// What `runc create` and its preparation produce, handed back to the loop.
struct CreateResult {
  absl::Status status;
  pid_t pid = 0;
  uint64_t start_boottime = 0;
  base::UniqueFd stdin_keepalive;
};

// Runs on a worker: mount the rootfs, open stdio, `runc create`. On failure
// it undoes what it did, so nothing stays mounted or created.
CreateResult CreateContainer(const embedshim::ContainerRecord& r, bool replayed) {
  CreateResult out;
  std::string rootfs = r.bundle() + "/rootfs";
  std::vector<oci::Mount> mounts;
  for (const auto& m : r.rootfs())
    mounts.push_back({m.type(), m.source(), {m.options().begin(), m.options().end()}});
  if (!mounts.empty()) {
    out.status = oci::MountRootfs(mounts, rootfs);
    if (!out.status.ok()) return out;
  }
  auto undo_mounts = [&] {
    if (!mounts.empty()) (void)oci::UnmountRootfs(rootfs);
  };
  oci::Runc runc = RuncFor(r);
  std::string pid_file = r.bundle() + "/init.pid";
  absl::StatusOr<oci::OpenedStdio> stdio;
  for (int attempt = 0;; ++attempt) {
    stdio = oci::OpenStdio({r.stdin(), r.stdout(), r.stderr()});
    if (!stdio.ok()) {
      undo_mounts();
      out.status = stdio.status();
      return out;
    }
    out.status = runc.Create(r.id(), r.bundle(), pid_file, std::move(stdio->child),
                             r.options().no_pivot_root(), r.options().no_new_keyring());
    // A replayed Create: the dead server's `runc create` lives on as an
    // orphan and may have created the container meanwhile. That attempt
    // belongs to nobody: remove it and create again.
    if (out.status.ok() || !replayed || attempt >= 50 ||
        out.status.message().find("already exists") == absl::string_view::npos)
      break;
    (void)runc.Delete(r.id(), /*force=*/true);
    usleep(20'000);  // rare recovery path, on a worker
  }
  if (out.status.ok()) {
    auto pid = oci::ReadPidFile(pid_file);
    if (pid.ok()) {
      out.pid = *pid;
      auto start = bpf::ReadStartBoottime(*pid);
      if (start.ok()) out.start_boottime = *start;
      else out.status = start.status();
    } else {
      out.status = pid.status();
    }
  }
  if (!out.status.ok()) {
    (void)runc.Delete(r.id(), /*force=*/true);
    undo_mounts();
    return out;
  }
  out.stdin_keepalive = std::move(stdio->stdin_keepalive);
  return out;
}

}  // namespace

TaskService::TaskService(ttrpc::EventLoop& loop, WorkerPool& pool, StateStore& store,
                         EventPublisher& events, bpf::ExitMonitor& monitor)
    : loop_(loop), pool_(pool), store_(store), events_(events), monitor_(monitor) {}

void TaskService::RegisterOn(ttrpc::Server& server) {
  using Method = void (TaskService::*)(Call);
  const std::pair<const char*, Method> methods[] = {
      {"Create", &TaskService::Create},   {"Start", &TaskService::Start},
      {"State", &TaskService::State},     {"Kill", &TaskService::Kill},
      {"Wait", &TaskService::Wait},       {"Delete", &TaskService::Delete},
      {"Pids", &TaskService::Pids},       {"Connect", &TaskService::Connect},
      {"Shutdown", &TaskService::Shutdown}, {"CloseIO", &TaskService::CloseIO},
      {"Pause", &TaskService::Pause},     {"Resume", &TaskService::Resume},
      {"Stats", &TaskService::Stats},
  };
  // containerd 2.x may speak v3; its messages are v2's under another name.
  for (const char* service : {"containerd.task.v2.Task", "containerd.task.v3.Task"}) {
    for (auto [name, method] : methods) {
      server.Register(service, name, [this, method](ttrpc::RequestContext ctx,
                                                    std::string payload,
                                                    ttrpc::Responder responder) {
        // containerd 1.7+ name the namespace in metadata; 1.6 does not, and
        // then the socket the connection came in on names it.
        Call call{std::string(ttrpc::FindMetadata(ctx.metadata, kNamespaceKey)
                                  .value_or(ctx.listener_label)),
                  std::move(payload), std::move(responder), ctx.replayed};
        if (!IsValidIdentifier(call.ns)) {
          call.Fail(absl::InvalidArgumentError(fmt::format(
              "request namespace {:?} is not a valid identifier (send {} metadata, or "
              "use the socket `start` returned for the namespace)", call.ns, kNamespaceKey)));
          return;
        }
        (this->*method)(std::move(call));
      });
    }
    for (const char* name : {"Checkpoint", "Exec", "ResizePty", "Update"}) {
      server.Register(service, name, [name](ttrpc::RequestContext, std::string,
                                            ttrpc::Responder r) {
        r.Reply(absl::UnimplementedError(
            fmt::format("{} is not supported by containerd-shim-embed-v1 yet", name)));
      });
    }
  }
}

absl::StatusOr<Container*> TaskService::Find(const std::string& ns, const std::string& id,
                                             const std::string& exec_id) {
  if (!IsValidIdentifier(id))
    return absl::InvalidArgumentError(fmt::format("container id {:?} is not valid", id));
  auto it = containers_.find(Key{ns, id});
  if (it == containers_.end())
    return absl::NotFoundError(fmt::format("container {} not created", id));
  if (!exec_id.empty())
    return absl::NotFoundError(fmt::format("exec {} of container {} not found", exec_id, id));
  return it->second.get();
}

void TaskService::Persist(const Container& c) {
  embedshim::ContainerRecord record = c.record;
  record.set_status(ToRecord(c.state));
  if (absl::Status st = store_.Save(record); !st.ok())
    LogFor(LogLevel::kError, c.ns(), c.id(), "persisting state: {}", st);
}

void TaskService::Create(Call call) {
  ++creates_seen_;
  auto req = call.Parse<task::CreateTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string& id = req->id();
  if (!IsValidIdentifier(id))
    return call.Fail(absl::InvalidArgumentError(fmt::format("container id {:?} is not valid", id)));
  if (req->bundle().empty() || req->bundle()[0] != '/')
    return call.Fail(absl::InvalidArgumentError(
        fmt::format("bundle {:?} must be an absolute path", req->bundle())));
  struct stat st;
  if (stat((req->bundle() + "/config.json").c_str(), &st) != 0)
    return call.Fail(absl::NotFoundError(
        fmt::format("bundle {}: no config.json: {}", req->bundle(), std::strerror(errno))));
  if (req->terminal())
    return call.Fail(absl::UnimplementedError("terminal (tty) containers are not supported yet"));
  if (!req->checkpoint().empty())
    return call.Fail(absl::UnimplementedError("restoring from a checkpoint is not supported"));

  if (auto it = containers_.find(Key{call.ns, id}); it != containers_.end()) {
    // A replayed Create for the same bundle gets the same answer.
    if (it->second->record.bundle() == req->bundle() && it->second->record.pid() != 0) {
      task::CreateTaskResponse resp;
      resp.set_pid(it->second->record.pid());
      return call.Reply(resp);
    }
    return call.Fail(absl::AlreadyExistsError(fmt::format("container {} already exists", id)));
  }
  auto options = DecodeRuntimeOptions(req->options());
  if (!options.ok()) return call.Fail(options.status());

  auto owned = std::make_unique<Container>();
  Container& c = *owned;
  embedshim::ContainerRecord& r = c.record;
  r.set_namespace_(call.ns);
  r.set_id(id);
  r.set_bundle(req->bundle());
  r.set_stdin(req->stdin());
  r.set_stdout(req->stdout());
  r.set_stderr(req->stderr());
  *r.mutable_options() = WithDefaults(*options);
  r.set_created_at_unix_nano(NowUnixNano());
  for (const auto& m : req->rootfs()) {
    auto* mr = r.add_rootfs();
    mr->set_type(m.type());
    mr->set_source(m.source());
    for (const auto& o : m.options()) mr->add_options(o);
  }
  Key key{call.ns, id};
  containers_[key] = std::move(owned);
  tombstones_.erase(key);
  LogFor(LogLevel::kInfo, call.ns, id, "create bundle={} runtime={}", r.bundle(),
         r.options().binary_name());
  // If this process dies during `runc create`, the next one finds this
  // record and cleans up (Recover) before the replayed Create runs again.
  r.set_status(embedshim::CREATING);
  if (absl::Status st = store_.Save(r); !st.ok())
    LogFor(LogLevel::kError, call.ns, id, "persisting state: {}", st);

  c.RunSerially([this, &c, key, call = std::move(call), req = std::move(*req)]() mutable {
    pool_.Run<std::shared_ptr<CreateResult>>(
        [record = c.record, replayed = call.replayed] {
          return std::make_shared<CreateResult>(CreateContainer(record, replayed));
        },
        [this, key, call = std::move(call), req = std::move(req)](std::shared_ptr<CreateResult> res) {
          auto it = containers_.find(key);
          Container& c = *it->second;
          if (!res->status.ok()) {
            LogFor(LogLevel::kError, c.ns(), c.id(), "create failed: {}", res->status);
            call.Fail(res->status);
            (void)store_.Remove(c.ns(), c.id());
            containers_.erase(it);  // nothing mounted or created remains
            MaybeIdle();
            return;
          }
          // runc holds the init until `runc start`, so tracking it now cannot
          // miss its exit.
          if (absl::Status st = monitor_.Track(res->pid, res->start_boottime); !st.ok()) {
            LogFor(LogLevel::kError, c.ns(), c.id(), "tracking pid {}: {}", res->pid, st);
          }
          by_pid_[res->pid] = key;
          c.record.set_pid(static_cast<uint32_t>(res->pid));
          c.record.set_start_boottime(res->start_boottime);
          if (res->stdin_keepalive && keep_fd_)
            keep_fd_(c.stdin_keepalive_name(), std::move(res->stdin_keepalive));
          c.state = ProcessState::kCreated;
          Persist(c);

          events::TaskCreate ev;
          ev.set_container_id(c.id());
          ev.set_bundle(c.record.bundle());
          *ev.mutable_rootfs() = req.rootfs();
          ev.mutable_io()->set_stdin(req.stdin());
          ev.mutable_io()->set_stdout(req.stdout());
          ev.mutable_io()->set_stderr(req.stderr());
          ev.mutable_io()->set_terminal(req.terminal());
          ev.set_pid(c.record.pid());
          events_.Publish(c.ns(), "/tasks/create", ev);
          LogFor(LogLevel::kInfo, c.ns(), c.id(), "created pid={}", c.record.pid());

          task::CreateTaskResponse resp;
          resp.set_pid(c.record.pid());
          call.Reply(resp);
          c.Done();
        });
  });
}

void TaskService::Start(Call call) {
  auto req = call.Parse<task::StartRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), req->exec_id());
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  c.RunSerially([this, &c, call = std::move(call)]() mutable {
    if (call.replayed && c.record.started()) {  // the earlier server started it
      task::StartResponse resp;
      resp.set_pid(c.record.pid());
      call.Reply(resp);
      return c.Done();
    }
    if (auto next = Transition(c.state, ProcessEvent::kStart); !next.ok()) {
      call.Fail(next.status());
      return c.Done();
    }
    c.starting = true;
    pool_.Run<absl::Status>(
        [runc = RuncFor(c.record), id = c.id(), pid = static_cast<pid_t>(c.record.pid()),
         replayed = call.replayed]() mutable {
          absl::Status st = runc.Start(id);
          // A replayed Start: the dead server's `runc start` lives on as an
          // orphan and may have started the container first ("already
          // running"). Once the init has left runc init, it was started.
          for (int i = 0; !st.ok() && replayed && i < 100; ++i) {
            if (!InRuncInit(pid)) st = absl::OkStatus();
            else usleep(20'000);  // rare recovery path, on a worker
          }
          return st;
        },
        [this, &c, call = std::move(call)](absl::Status st) {
          c.starting = false;
          if (st.ok()) {
            MarkStarted(c);
            LogFor(LogLevel::kInfo, c.ns(), c.id(), "started pid={}", c.record.pid());
            task::StartResponse resp;
            resp.set_pid(c.record.pid());
            call.Reply(resp);
          } else {
            LogFor(LogLevel::kError, c.ns(), c.id(), "start failed: {}", st);
            call.Fail(st);
          }
          if (c.exit_during_start) {
            bpf::ExitRecord exit = *c.exit_during_start;
            c.exit_during_start.reset();
            ApplyExit(c, exit);
          }
          c.Done();
        });
  });
}

void TaskService::State(Call call) {
  auto req = call.Parse<task::StateRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), req->exec_id());
  if (!found.ok()) return call.Fail(found.status());
  const Container& c = **found;
  task::StateResponse resp;
  resp.set_id(c.id());
  resp.set_bundle(c.record.bundle());
  resp.set_pid(c.record.pid());
  resp.set_status(static_cast<containerd::v1::types::Status>(ToContainerdStatus(c.state)));
  resp.set_stdin(c.record.stdin());
  resp.set_stdout(c.record.stdout());
  resp.set_stderr(c.record.stderr());
  resp.set_terminal(c.record.terminal());
  resp.set_exit_status(c.record.exit_status());
  if (c.state == ProcessState::kStopped)
    SetTimestamp(resp.mutable_exited_at(), c.record.exited_at_unix_nano());
  call.Reply(resp);
}

void TaskService::Kill(Call call) {
  auto req = call.Parse<task::KillRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), req->exec_id());
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  c.RunSerially([this, &c, call = std::move(call), req = std::move(*req)]() mutable {
    if (call.replayed && c.state == ProcessState::kStopped) {  // it worked the first time
      call.Reply(google::protobuf::Empty());
      return c.Done();
    }
    if (auto next = Transition(c.state, ProcessEvent::kKill); !next.ok()) {
      call.Fail(next.status());
      return c.Done();
    }
    LogFor(LogLevel::kInfo, c.ns(), c.id(), "kill signal={} all={}", req.signal(), req.all());
    pool_.Run<absl::Status>(
        [runc = RuncFor(c.record), id = c.id(), sig = static_cast<int>(req.signal()),
         all = req.all()]() mutable { return runc.Kill(id, sig, all); },
        [&c, call = std::move(call)](absl::Status st) {
          // A replayed Kill that finds the process gone: the dead server's
          // `runc kill`, an orphan now, got there first. It worked.
          if (call.replayed && absl::IsNotFound(st)) st = absl::OkStatus();
          if (st.ok()) {
            call.Reply(google::protobuf::Empty());
          } else {
            LogFor(LogLevel::kWarn, c.ns(), c.id(), "kill: {}", st);
            call.Fail(st);
          }
          c.Done();
        });
  });
}

void TaskService::Pause(Call call) {
  auto req = call.Parse<task::PauseRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Freeze(std::move(call), req->id(), ProcessEvent::kPause);
}

void TaskService::Resume(Call call) {
  auto req = call.Parse<task::ResumeRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Freeze(std::move(call), req->id(), ProcessEvent::kResume);
}

void TaskService::Freeze(Call call, const std::string& id, ProcessEvent event) {
  auto found = Find(call.ns, id, "");
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  c.RunSerially([this, &c, call = std::move(call), event]() mutable {
    const bool pause = event == ProcessEvent::kPause;
    const ProcessState target = pause ? ProcessState::kPaused : ProcessState::kRunning;
    if (call.replayed && c.state == target) {  // it worked the first time
      call.Reply(google::protobuf::Empty());
      return c.Done();
    }
    if (auto next = Transition(c.state, event); !next.ok()) {
      call.Fail(next.status());
      return c.Done();
    }
    pool_.Run<absl::Status>(
        [runc = RuncFor(c.record), id = c.id(), pause] {
          return pause ? runc.Pause(id) : runc.Resume(id);
        },
        [this, &c, call = std::move(call), pause, target](absl::Status st) {
          // A replayed one: the dead server's `runc pause|resume`, an orphan
          // now, may have done it first, and runc refuses to do it twice.
          if (!st.ok() && call.replayed &&
              st.message().find(pause ? "not running" : "not paused") != absl::string_view::npos)
            st = absl::OkStatus();
          if (!st.ok()) {
            LogFor(LogLevel::kWarn, c.ns(), c.id(), "{}: {}", pause ? "pause" : "resume", st);
            call.Fail(st);
            return c.Done();
          }
          if (c.state != ProcessState::kStopped) c.state = target;  // an exit meanwhile wins
          LogFor(LogLevel::kInfo, c.ns(), c.id(), "{}", pause ? "paused" : "resumed");
          if (pause) {
            events::TaskPaused ev;
            ev.set_container_id(c.id());
            events_.Publish(c.ns(), "/tasks/paused", ev);
          } else {
            events::TaskResumed ev;
            ev.set_container_id(c.id());
            events_.Publish(c.ns(), "/tasks/resumed", ev);
          }
          Persist(c);
          call.Reply(google::protobuf::Empty());
          c.Done();
        });
  });
}

void TaskService::Stats(Call call) {
  auto req = call.Parse<task::StatsRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), "");
  if (!found.ok()) return call.Fail(found.status());
  const Container& c = **found;
  if (c.state == ProcessState::kStopped)
    return call.Fail(absl::FailedPreconditionError(
        fmt::format("container {} has exited: no cgroup to read", c.id())));
  pool_.Run<absl::StatusOr<CgroupMetrics>>(
      [pid = static_cast<pid_t>(c.record.pid()), start = c.record.start_boottime(),
       id = c.id()]() -> absl::StatusOr<CgroupMetrics> {
        // The pid must still be the container's init: pids get reused.
        auto same = bpf::IsSameLiveProcess(pid, start);
        if (!same.ok() || !*same)
          return absl::FailedPreconditionError(
              fmt::format("container {} has exited: no cgroup to read", id));
        return ReadCgroupMetrics(pid);
      },
      [call = std::move(call)](absl::StatusOr<CgroupMetrics> metrics) {
        if (!metrics.ok()) return call.Fail(metrics.status());
        task::StatsResponse resp;
        resp.mutable_stats()->set_type_url(metrics->type_url);
        resp.mutable_stats()->set_value(std::move(metrics->value));
        call.Reply(resp);
      });
}

void TaskService::Wait(Call call) {
  auto req = call.Parse<task::WaitRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), req->exec_id());
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  if (c.state == ProcessState::kStopped) {
    task::WaitResponse resp;
    resp.set_exit_status(c.record.exit_status());
    SetTimestamp(resp.mutable_exited_at(), c.record.exited_at_unix_nano());
    return call.Reply(resp);
  }
  c.waiters.push_back(std::move(call.responder));
}

Container* TaskService::ContainerOfPid(pid_t pid) {
  auto it = by_pid_.find(pid);
  if (it == by_pid_.end()) return nullptr;
  auto c = containers_.find(it->second);
  return c == containers_.end() ? nullptr : c->second.get();
}

void TaskService::OnExit(const bpf::ExitRecord& exit) {
  Container* c = ContainerOfPid(exit.pid);
  if (!c) {
    by_pid_.erase(exit.pid);
    (void)monitor_.Forget(exit.pid);  // not ours (any more)
    return;
  }
  if (c->starting) {
    c->exit_during_start = exit;
    return;
  }
  ApplyExit(*c, exit);
}

void TaskService::WhenInitGone(Container& c, std::function<void()> then) {
  if (c.state != ProcessState::kStopped) return then();
  auto pidfd = bpf::PidfdIfSameLive(static_cast<pid_t>(c.record.pid()),
                                    c.record.start_boottime());
  if (!pidfd.ok()) return then();  // gone already, or the pid is another process's now
  // Whichever comes first, the pidfd or the time limit, runs `then`.
  struct Wait {
    base::UniqueFd pidfd;
    std::function<void()> then;
    ttrpc::EventLoop* loop;
    void Fire() {
      if (!then) return;
      loop->Remove(pidfd.get());
      pidfd.Reset();
      std::exchange(then, nullptr)();
    }
  };
  auto wait = std::make_shared<Wait>(Wait{std::move(*pidfd), std::move(then), &loop_});
  if (absl::Status st = loop_.Add(wait->pidfd.get(), EPOLLIN, [wait](uint32_t) { wait->Fire(); });
      !st.ok())
    return wait->Fire();
  loop_.RunAfter(kInitGoneLimit, [this, wait, &c] {
    if (!wait->then) return;
    LogFor(LogLevel::kWarn, c.ns(), c.id(),
           "init pid {} exited {} s ago and its pid namespace is still not empty",
           c.record.pid(), absl::ToInt64Seconds(kInitGoneLimit));
    wait->Fire();
  });
}

void TaskService::ApplyExit(Container& c, const bpf::ExitRecord& exit) {
  auto next = Transition(c.state, ProcessEvent::kExit);
  if (!next.ok() || c.state == ProcessState::kStopped) return;
  c.state = *next;
  c.record.set_exit_status(static_cast<uint32_t>(bpf::ExitCode(exit.wait_status)));
  c.record.set_exited_at_unix_nano(exit.exited_at_ns);
  LogFor(LogLevel::kInfo, c.ns(), c.id(), "exited pid={} status={}", exit.pid,
         c.record.exit_status());

  // Order matters across a crash: the event is spooled, then the state is
  // persisted, then the exit record is forgotten. A server that dies between
  // any two steps is followed by one that replays the exit, finds the event
  // already spooled, and does not send it twice.
  if (!events_.Spooled("/tasks/exit", c.ns(), c.id())) {
    events_.Publish(c.ns(), "/tasks/exit", ExitEventOf<events::TaskExit>(c.record));
  }
  Persist(c);
  (void)monitor_.Forget(exit.pid);
  by_pid_.erase(exit.pid);

  task::WaitResponse resp;
  resp.set_exit_status(c.record.exit_status());
  SetTimestamp(resp.mutable_exited_at(), c.record.exited_at_unix_nano());
  std::string bytes = resp.SerializeAsString();
  for (auto& w : c.waiters) w.Reply(bytes);
  c.waiters.clear();
}

void TaskService::Delete(Call call) {
  auto req = call.Parse<task::DeleteRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), req->exec_id());
  if (!found.ok()) {
    auto tomb = tombstones_.find(Key{call.ns, req->id()});
    if (call.replayed && req->exec_id().empty() && tomb != tombstones_.end())
      return call.Reply(DeleteResponseOf(tomb->second));  // the earlier server deleted it
    return call.Fail(found.status());
  }
  Container& c = **found;
  c.RunSerially([this, &c, call = std::move(call)]() mutable {
    auto next = Transition(c.state, ProcessEvent::kDelete);
    if (!next.ok()) {
      call.Fail(next.status());
      return c.Done();
    }
    bool never_started = c.state == ProcessState::kCreated;
    if (never_started) {
      // `runc delete` kills the waiting init; that is no exit to report.
      (void)monitor_.Untrack(c.record.pid());
      by_pid_.erase(c.record.pid());
    }
    WhenInitGone(c, [this, &c, call = std::move(call), never_started]() mutable {
      pool_.Run<absl::Status>(
          [runc = RuncFor(c.record), id = c.id(), bundle = c.record.bundle(),
           force = never_started]() mutable {
            absl::Status st = runc.Delete(id, force);
            if (absl::IsNotFound(st)) st = absl::OkStatus();  // already gone
            absl::Status um = oci::UnmountRootfs(bundle + "/rootfs");
            return st.ok() ? um : st;
          },
          [this, &c, call = std::move(call), never_started](absl::Status st) {
            if (!st.ok()) {
              LogFor(LogLevel::kError, c.ns(), c.id(), "delete failed: {}", st);
              call.Fail(st);
              return c.Done();
            }
            if (never_started) c.record.set_exited_at_unix_nano(NowUnixNano());
            task::DeleteResponse resp = DeleteResponseOf(c.record);

            events_.Publish(c.ns(), "/tasks/delete", ExitEventOf<events::TaskDelete>(c.record));
            LogFor(LogLevel::kInfo, c.ns(), c.id(), "deleted");
            call.Reply(resp);
            Remove(c);  // queued ops find the container gone
          });
    });
  });
}

void TaskService::Remove(Container& c) {
  Key key{c.ns(), c.id()};
  // A tombstone, so that a Delete replayed to a later server gets this answer.
  c.record.set_status(embedshim::DELETED);
  c.record.set_deleted_at_unix_nano(NowUnixNano());
  if (absl::Status st = store_.Save(c.record); !st.ok())
    LogFor(LogLevel::kError, c.ns(), c.id(), "persisting state: {}", st);
  AddTombstone(c.record);
  by_pid_.erase(c.record.pid());
  if (drop_fd_) drop_fd_(c.stdin_keepalive_name());
  for (auto& w : c.waiters) w.Reply(absl::NotFoundError("container deleted"));
  // RPCs queued behind the delete now find a deleted process and say so.
  c.state = ProcessState::kDeleted;
  c.Done();
  containers_.erase(key);
  MaybeIdle();
}

void TaskService::AddTombstone(const embedshim::ContainerRecord& r) {
  Key key{r.namespace_(), r.id()};
  tombstones_[key] = r;
  // Long enough for any replay of the Delete; then the record goes.
  loop_.RunAfter(kTombstoneLife, [this, key, deleted_at = r.deleted_at_unix_nano()] {
    auto it = tombstones_.find(key);
    if (it == tombstones_.end() || it->second.deleted_at_unix_nano() != deleted_at) return;
    tombstones_.erase(it);
    if (!containers_.contains(key)) (void)store_.Remove(key.first, key.second);
  });
}

void TaskService::MarkStarted(Container& c) {
  c.state = ProcessState::kRunning;
  c.record.set_started(true);
  if (!events_.Spooled("/tasks/start", c.ns(), c.id())) {  // spooled first, then the state
    events::TaskStart ev;
    ev.set_container_id(c.id());
    ev.set_pid(c.record.pid());
    events_.Publish(c.ns(), "/tasks/start", ev);
  }
  Persist(c);
}

void TaskService::Pids(Call call) {
  auto req = call.Parse<task::PidsRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), "");
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  pool_.Run<absl::StatusOr<std::vector<pid_t>>>(
      [runc = RuncFor(c.record), id = c.id()]() mutable { return runc.Ps(id); },
      [call = std::move(call)](absl::StatusOr<std::vector<pid_t>> pids) {
        if (!pids.ok()) return call.Fail(pids.status());
        task::PidsResponse resp;
        for (pid_t p : *pids) resp.add_processes()->set_pid(static_cast<uint32_t>(p));
        call.Reply(resp);
      });
}

void TaskService::Connect(Call call) {
  auto req = call.Parse<task::ConnectRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), "");
  if (!found.ok()) return call.Fail(found.status());
  task::ConnectResponse resp;
  resp.set_shim_pid(static_cast<uint32_t>(getpid()));
  resp.set_task_pid((*found)->record.pid());
  call.Reply(resp);
}

void TaskService::Shutdown(Call call) {
  // Other containers may still be served: the daemon exits only once none is
  // left (MaybeIdle), never because one task's owner asked.
  shutdown_requested_ = true;
  call.Reply(google::protobuf::Empty());
  MaybeIdle();
}

void TaskService::CloseIO(Call call) {
  auto req = call.Parse<task::CloseIORequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id(), req->exec_id());
  if (!found.ok()) return call.Fail(found.status());
  if (req->stdin() && drop_fd_) drop_fd_((*found)->stdin_keepalive_name());
  call.Reply(google::protobuf::Empty());
}

bool TaskService::ShutdownIfUnused() {
  if (creates_seen_ > 0 || !containers_.empty()) return false;
  shutdown_requested_ = true;
  MaybeIdle();
  return true;
}

void TaskService::MaybeIdle() {
  if (shutdown_requested_ && containers_.empty() && on_idle_) on_idle_();
}

std::vector<embedshim::ContainerStatus> TaskService::Snapshot() const {
  std::vector<embedshim::ContainerStatus> out;
  for (const auto& [key, c] : containers_) {
    embedshim::ContainerStatus s;
    s.set_namespace_(c->ns());
    s.set_id(c->id());
    s.set_pid(c->record.pid());
    s.set_status(std::string(Name(c->state)));
    s.set_exit_status(c->record.exit_status());
    s.set_created_at_unix_nano(c->record.created_at_unix_nano());
    s.set_exited_at_unix_nano(c->record.exited_at_unix_nano());
    auto same = bpf::IsSameLiveProcess(static_cast<pid_t>(c->record.pid()),
                                       c->record.start_boottime());
    if (!same.ok() || !*same) {
      s.set_pid_check(kill(static_cast<pid_t>(c->record.pid()), 0) == 0 &&
                              c->state != ProcessState::kStopped
                          ? "reused"
                          : "exited");
    } else {
      s.set_pid_check("same");
    }
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.namespace_(), a.id()) < std::tie(b.namespace_(), b.id());
  });
  return out;
}

std::vector<std::string> TaskService::Namespaces() const {
  std::vector<std::string> out;
  for (const auto& [key, c] : containers_) {
    if (std::find(out.begin(), out.end(), key.first) == out.end()) out.push_back(key.first);
  }
  return out;
}

void TaskService::Recover() {
  std::vector<std::string> errors;
  for (auto& record : store_.LoadAll(&errors)) {
    Key key{record.namespace_(), record.id()};
    if (record.status() == embedshim::DELETED) {
      AddTombstone(record);
      continue;
    }
    if (record.status() == embedshim::CREATING) {
      // The server died during `runc create`: undo it. The replayed Create,
      // if containerd still waits for it, then starts afresh. Rare, so done
      // here, synchronously.
      LogFor(LogLevel::kWarn, record.namespace_(), record.id(),
             "cleaning up a create that was in flight");
      (void)RuncFor(record).Delete(record.id(), /*force=*/true);
      (void)oci::UnmountRootfs(record.bundle() + "/rootfs");
      (void)store_.Remove(record.namespace_(), record.id());
      continue;
    }
    auto c = std::make_unique<Container>();
    c->record = record;
    c->state = FromRecord(record.status());
    pid_t pid = static_cast<pid_t>(record.pid());
    if (c->state == ProcessState::kCreated || c->state == ProcessState::kRunning ||
        c->state == ProcessState::kPaused) {
      by_pid_[pid] = key;
      // Still the same process? (A stopped one is reported by Replay below.)
      auto same = bpf::IsSameLiveProcess(pid, record.start_boottime());
      if (same.ok() && !*same)
        LogFor(LogLevel::kWarn, record.namespace_(), record.id(),
               "pid {} is no longer the container's process", pid);
    }
    // `runc start` ran but the server died before it said so: once runc
    // init has exec'd the user's process, the container was started.
    if (c->state == ProcessState::kCreated && !InRuncInit(pid)) MarkStarted(*c);
    containers_[key] = std::move(c);
  }
  for (const auto& e : errors) LogError("recover: {}", e);
  // Exits recorded while no server ran: the pinned map is the truth.
  if (auto exits = monitor_.Replay(); exits.ok()) {
    for (const auto& exit : *exits) OnExit(exit);
  }
  LogInfo("recovered {} containers", containers_.size());
}

bool TaskService::InRuncInit(pid_t pid) {
  std::ifstream comm(fmt::format("/proc/{}/comm", pid));
  std::string name;
  std::getline(comm, name);
  // runc's and crun's init names while they wait for `start`; a dead pid
  // also counts as "not started" here: its exit says the rest.
  return name.empty() || name.rfind("runc:", 0) == 0 || name == "crun";
}

}  // namespace shim
