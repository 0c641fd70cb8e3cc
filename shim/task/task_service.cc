#include "shim/task/task_service.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "keeper/link.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "google/protobuf/empty.pb.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"
#include "shim.pb.h"
#include "shim/process/clock.h"
#include "shim/process/exit_report.h"
#include "shim/process/identifier.h"
#include "shim/process/runtime_marker.h"
#include "shim/process/runtime_options.h"
#include "shim/store/paths.h"
#include "shim/task/cgroup_metrics.h"

namespace shim {

namespace task = containerd::task::v2;
using process::Container;
using process::Event;
using process::Process;
using process::Status;

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
  // Empty on success, else the error.
  void Answer(const absl::Status& status) const {
    if (status.ok()) Reply(google::protobuf::Empty());
    else Fail(status);
  }
};

namespace {

constexpr char kNamespaceKey[] = "containerd-namespace-ttrpc";

// The turn, held by whichever callback finishes the call.
using SharedTurn = std::shared_ptr<process::SerialQueue::Turn>;
SharedTurn Share(process::SerialQueue::Turn turn) {
  return std::make_shared<process::SerialQueue::Turn>(std::move(turn));
}

}  // namespace

TaskService::TaskService(process::Environment& env, ReplayExits replay)
    : env_(env), replay_(std::move(replay)), router_(env.exits) {}

void TaskService::RegisterOn(ttrpc::Server& server) {
  using Method = void (TaskService::*)(Call);
  const std::pair<const char*, Method> methods[] = {
      {"Create", &TaskService::Create},     {"Start", &TaskService::Start},
      {"State", &TaskService::State},       {"Kill", &TaskService::Kill},
      {"Wait", &TaskService::Wait},         {"Delete", &TaskService::Delete},
      {"Pids", &TaskService::Pids},         {"Connect", &TaskService::Connect},
      {"Shutdown", &TaskService::Shutdown}, {"CloseIO", &TaskService::CloseIO},
      {"Pause", &TaskService::Pause},       {"Resume", &TaskService::Resume},
      {"Stats", &TaskService::Stats},       {"Exec", &TaskService::Exec},
      {"ResizePty", &TaskService::ResizePty}, {"Update", &TaskService::Update},
      {"Checkpoint", &TaskService::Checkpoint},
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
                                  .value_or(keeper::ListenerLabel(ctx))),
                  std::move(payload), std::move(responder), keeper::Replayed(ctx)};
        if (!IsValidIdentifier(call.ns)) {
          call.Fail(absl::InvalidArgumentError(fmt::format(
              "request namespace {:?} is not a valid identifier (send {} metadata, or "
              "use the socket `start` returned for the namespace)", call.ns, kNamespaceKey)));
          return;
        }
        (this->*method)(std::move(call));
      });
    }
  }
}

absl::StatusOr<Container*> TaskService::Find(const std::string& ns, const std::string& id) {
  if (!IsValidIdentifier(id))
    return absl::InvalidArgumentError(fmt::format("container id {:?} is not valid", id));
  auto it = containers_.find(Key{ns, id});
  if (it == containers_.end())
    return absl::NotFoundError(fmt::format("container {} not created", id));
  return it->second.get();
}

absl::StatusOr<Process*> TaskService::FindProcess(const std::string& ns, const std::string& id,
                                                  const std::string& exec_id) {
  auto c = Find(ns, id);
  if (!c.ok()) return c.status();
  return (*c)->Find(exec_id);
}

void TaskService::Serially(Call call, const std::string& id,
                           std::function<void(Call, Container&, Turn)> op) {
  auto found = Find(call.ns, id);
  if (!found.ok()) return call.Fail(found.status());
  (*found)->queue().Run([this, key = Key{call.ns, id}, call = std::move(call),
                         op = std::move(op)](Turn turn) mutable {
    auto it = containers_.find(key);
    if (it == containers_.end())
      return call.Fail(absl::NotFoundError(fmt::format("container {} not found", key.second)));
    op(std::move(call), *it->second, std::move(turn));
  });
}

void TaskService::Create(Call call) {
  ++creates_seen_;
  auto req = call.Parse<task::CreateTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string id = req->id();  // a copy: req is moved into the op below
  if (!IsValidIdentifier(id))
    return call.Fail(absl::InvalidArgumentError(fmt::format("container id {:?} is not valid", id)));
  if (req->bundle().empty() || req->bundle()[0] != '/')
    return call.Fail(absl::InvalidArgumentError(
        fmt::format("bundle {:?} must be an absolute path", req->bundle())));
  struct stat st;
  if (stat((req->bundle() + "/config.json").c_str(), &st) != 0)
    return call.Fail(absl::NotFoundError(
        fmt::format("bundle {}: no config.json: {}", req->bundle(), std::strerror(errno))));

  Key key{call.ns, id};
  if (auto it = containers_.find(key); it != containers_.end()) {
    // A replayed Create for the same bundle gets the same answer.
    const Container& c = *it->second;
    if (c.bundle() == req->bundle() && c.init().pid() != 0) {
      task::CreateTaskResponse resp;
      resp.set_pid(static_cast<uint32_t>(c.init().pid()));
      return call.Reply(resp);
    }
    // The dead server's create is being settled (adopted or undone): the
    // replay is answered after it, with the adopted pid or a create afresh.
    if (call.replayed && c.bundle() == req->bundle() && c.init().status() == Status::kCreating &&
        it->second->queue().busy()) {
      return it->second->queue().Run([this, call = std::move(call)](Turn turn) mutable {
        turn.Release();
        Create(std::move(call));
      });
    }
    return call.Fail(absl::AlreadyExistsError(fmt::format("container {} already exists", id)));
  }
  auto options = DecodeRuntimeOptions(req->options());
  if (!options.ok()) return call.Fail(options.status());
  // One shim serves every container: it cannot move into each one's
  // ShimCgroup (docs/OPTIONS.md). Said when it changes, never an error.
  if (!options->shim_cgroup().empty() && options->shim_cgroup() != shim_cgroup_noted_) {
    shim_cgroup_noted_ = options->shim_cgroup();
    base::LogInfo("ShimCgroup {} is not applied per container: the shared shim stays in the cgroup "
            "its launching start joined", options->shim_cgroup());
  }

  embedshim::ContainerRecord r;
  r.set_namespace_(call.ns);
  r.set_id(id);
  r.set_bundle(req->bundle());
  r.set_stdin(req->stdin());
  r.set_stdout(req->stdout());
  r.set_stderr(req->stderr());
  r.set_terminal(req->terminal());
  *r.mutable_options() = WithDefaults(*options);
  r.set_created_at_unix_nano(NowUnixNano());
  r.set_status(embedshim::CREATING);
  // A restore: Start runs `runc restore`. Options.CriuImagePath asks for one
  // too (containerd turns it into the checkpoint for runc's runtimes only).
  r.set_restore_checkpoint(!req->checkpoint().empty() ? req->checkpoint()
                                                      : r.options().criu_image_path());
  r.set_restore_parent_checkpoint(req->parent_checkpoint());
  for (const auto& m : req->rootfs()) {
    auto* mr = r.add_rootfs();
    mr->set_type(m.type());
    mr->set_source(m.source());
    for (const auto& o : m.options()) mr->add_options(o);
  }
  base::LogFor(base::LogLevel::kInfo, call.ns, id, "create bundle={} runtime={} terminal={}", r.bundle(),
         r.options().binary_name(), r.terminal());
  auto& slot = containers_[key];
  slot = std::make_unique<Container>(env_, router_, std::move(r));
  tombstones_.erase(key);
  Serially(std::move(call), id, [this, key, req = std::move(*req)](Call call, Container& c,
                                                                   Turn turn) {
    c.init().Create(call.replayed, req, [this, key, call, turn = Share(std::move(turn))](
                                            absl::StatusOr<pid_t> pid) {
      if (!pid.ok()) {
        call.Fail(pid.status());
        (void)env_.store.Remove(key.first, key.second);
        containers_.erase(key);  // calls queued behind it find no container
        return MaybeIdle();
      }
      task::CreateTaskResponse resp;
      resp.set_pid(static_cast<uint32_t>(*pid));
      call.Reply(resp);
    });
  });
}

void TaskService::Start(Call call) {
  auto req = call.Parse<task::StartRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Serially(std::move(call), req->id(), [exec_id = req->exec_id()](Call call, Container& c,
                                                                  Turn turn) {
    auto p = c.Find(exec_id);
    if (!p.ok()) return call.Fail(p.status());
    (*p)->Start(call.replayed, [call, turn = Share(std::move(turn))](absl::StatusOr<pid_t> pid) {
      if (!pid.ok()) return call.Fail(pid.status());
      task::StartResponse resp;
      resp.set_pid(static_cast<uint32_t>(*pid));
      call.Reply(resp);
    });
  });
}

void TaskService::Exec(Call call) {
  auto req = call.Parse<task::ExecProcessRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string id = req->id();  // before req is moved into the op
  Serially(std::move(call), id, [req = std::move(*req)](Call call, Container& c, Turn) {
    call.Answer(c.AddExec(req, call.replayed));
  });
}

void TaskService::State(Call call) {
  auto req = call.Parse<task::StateRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  task::StateResponse resp;
  (*p)->FillState(resp);
  call.Reply(resp);
}

void TaskService::Kill(Call call) {
  auto req = call.Parse<task::KillRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string id = req->id();  // before req is moved into the op
  Serially(std::move(call), id, [req = std::move(*req)](Call call, Container& c,
                                                               Turn turn) {
    auto p = c.Find(req.exec_id());
    if (!p.ok()) return call.Fail(p.status());
    (*p)->Kill(static_cast<int>(req.signal()), req.all(), call.replayed,
               [call, turn = Share(std::move(turn))](absl::Status st) { call.Answer(st); });
  });
}

void TaskService::Pause(Call call) {
  auto req = call.Parse<task::PauseRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Freeze(std::move(call), req->id(), Event::kPause);
}

void TaskService::Resume(Call call) {
  auto req = call.Parse<task::ResumeRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Freeze(std::move(call), req->id(), Event::kResume);
}

void TaskService::Freeze(Call call, const std::string& id, Event event) {
  Serially(std::move(call), id, [event](Call call, Container& c, Turn turn) {
    c.init().Freeze(event, call.replayed,
                    [call, turn = Share(std::move(turn))](absl::Status st) { call.Answer(st); });
  });
}

namespace {

// The request as `runc checkpoint` needs it. The options come as
// containerd.runc.v1.CheckpointOptions, or the older
// containerd.linux.runc.CheckpointOptions (image_path and work_path swap
// numbers there); an image path in them wins over the request's path.
absl::StatusOr<process::CheckpointSpec> CheckpointSpecOf(const task::CheckpointTaskRequest& req) {
  process::CheckpointSpec spec;
  spec.image_path = req.path();
  const google::protobuf::Any& any = req.options();
  std::string type = any.type_url();
  if (size_t slash = type.rfind('/'); slash != std::string::npos) type = type.substr(slash + 1);
  auto fill = [&spec](const auto& o) {
    spec.exit = o.exit();
    spec.open_tcp = o.open_tcp();
    spec.external_unix_sockets = o.external_unix_sockets();
    spec.terminal = o.terminal();
    spec.file_locks = o.file_locks();
    spec.empty_namespaces.assign(o.empty_namespaces().begin(), o.empty_namespaces().end());
    spec.cgroups_mode = o.cgroups_mode();
    if (!o.image_path().empty()) spec.image_path = o.image_path();
    spec.work_path = o.work_path();
  };
  if (type.empty()) {
    // No options: runc-v2's defaults (leave running).
  } else if (type == "containerd.runc.v1.CheckpointOptions") {
    containerd::runc::v1::CheckpointOptions o;
    if (!o.ParseFromString(any.value()))
      return absl::InvalidArgumentError(fmt::format("cannot decode {}", type));
    fill(o);
  } else if (type == "containerd.linux.runc.CheckpointOptions") {
    containerd::linux::runc::CheckpointOptions o;
    if (!o.ParseFromString(any.value()))
      return absl::InvalidArgumentError(fmt::format("cannot decode {}", type));
    fill(o);
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "checkpoint options of type {} are not supported (want "
        "containerd.runc.v1.CheckpointOptions)", type));
  }
  if (spec.image_path.empty())
    return absl::InvalidArgumentError("checkpoint: no image path (request path or options)");
  return spec;
}

}  // namespace

void TaskService::Checkpoint(Call call) {
  auto req = call.Parse<task::CheckpointTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto spec = CheckpointSpecOf(*req);
  if (!spec.ok()) return call.Fail(spec.status());
  Serially(std::move(call), req->id(), [spec = std::move(*spec)](Call call, Container& c,
                                                                   Turn turn) {
    c.init().Checkpoint(spec, [call, turn = Share(std::move(turn))](absl::Status st) {
      call.Answer(st);
    });
  });
}

void TaskService::Update(Call call) {
  auto req = call.Parse<task::UpdateTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  // Like runc-v2: the Any's value is specs.LinuxResources as JSON, whatever
  // its type_url says, and the annotations are not used.
  if (req->resources().value().empty())
    return call.Fail(absl::InvalidArgumentError(
        fmt::format("update of container {} carries no resources", req->id())));
  const std::string id = req->id();  // before req is moved into the op
  Serially(std::move(call), id, [resources = std::move(*req->mutable_resources()->mutable_value())](
                                    Call call, Container& c, Turn turn) mutable {
    c.init().Update(std::move(resources), [call, turn = Share(std::move(turn))](absl::Status st) {
      call.Answer(st);
    });
  });
}

void TaskService::OnOomKills(const std::string& ns, const std::string& id, uint64_t oom_kills) {
  if (auto it = containers_.find(Key{ns, id}); it != containers_.end())
    it->second->OnOomKills(oom_kills);
}

void TaskService::Wait(Call call) {
  auto req = call.Parse<task::WaitRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  (*p)->AddWaiter(std::move(call.responder));
}

void TaskService::Delete(Call call) {
  auto req = call.Parse<task::DeleteRequest>();
  if (!req.ok()) return call.Fail(req.status());
  if (!containers_.contains(Key{call.ns, req->id()})) {
    auto tomb = tombstones_.find(Key{call.ns, req->id()});
    if (call.replayed && req->exec_id().empty() && tomb != tombstones_.end())
      return call.Reply(DeleteResponseOf(tomb->second));  // the earlier server deleted it
  }
  Serially(std::move(call), req->id(), [this, exec_id = req->exec_id()](Call call, Container& c,
                                                                       Turn turn) {
    if (!exec_id.empty()) {
      auto e = c.FindExec(exec_id);
      if (!e.ok()) return call.Fail(e.status());
      auto resp = (*e)->Delete(call.replayed);
      if (!resp.ok()) return call.Fail(resp.status());
      return call.Reply(*resp);
    }
    c.init().Delete([this, &c, call, turn = Share(std::move(turn))](
                        absl::StatusOr<task::DeleteResponse> resp) {
      if (!resp.ok()) return call.Fail(resp.status());
      call.Reply(*resp);
      Remove(c);  // calls queued behind it find no container
    });
  });
}

void TaskService::Remove(Container& c) {
  Key key{c.ns(), c.id()};
  // A tombstone, so that a Delete replayed to a later server gets this answer.
  embedshim::ContainerRecord record = c.Record();
  record.set_deleted_at_unix_nano(NowUnixNano());
  if (absl::Status st = env_.store.Save(record); !st.ok())
    base::LogFor(base::LogLevel::kError, c.ns(), c.id(), "persisting state: {}", st);
  AddTombstone(record);
  env_.oom.Unwatch(c.ns(), c.id());
  containers_.erase(key);
  MaybeIdle();
}

void TaskService::AddTombstone(const embedshim::ContainerRecord& r) {
  Key key{r.namespace_(), r.id()};
  tombstones_[key] = r;
  // Long enough for any replay of the Delete; then the record goes.
  env_.loop.RunAfter(kTombstoneLife, [this, key, deleted_at = r.deleted_at_unix_nano()] {
    auto it = tombstones_.find(key);
    if (it == tombstones_.end() || it->second.deleted_at_unix_nano() != deleted_at) return;
    tombstones_.erase(it);
    if (!containers_.contains(key)) (void)env_.store.Remove(key.first, key.second);
  });
}

void TaskService::SettleOrphanedCreate(Container& c) {
  c.queue().Run([this, key = Key{c.ns(), c.id()}](Turn turn) {
    auto it = containers_.find(key);
    if (it == containers_.end()) return;
    it->second->init().SettleOrphanedCreate(
        [this, key, turn = Share(std::move(turn))](absl::StatusOr<bool> adopted) {
          if (adopted.ok() && *adopted) return;
          (void)env_.store.Remove(key.first, key.second);
          containers_.erase(key);  // a replayed Create queued behind it creates afresh
          MaybeIdle();
        });
  });
}

void TaskService::Pids(Call call) {
  auto req = call.Parse<task::PidsRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id());
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  // runc-v2 names each exec's pid with its exec id.
  absl::flat_hash_map<pid_t, std::string> exec_ids;
  for (const auto& [id, e] : c.execs())
    if (e->alive()) exec_ids[e->pid()] = id;
  env_.pool.Run<absl::StatusOr<std::vector<pid_t>>>(
      [&runtime = env_.runtime, record = c.Record()] { return runtime.Ps(record); },
      [call = std::move(call), exec_ids = std::move(exec_ids)](
          absl::StatusOr<std::vector<pid_t>> pids) {
        if (!pids.ok()) return call.Fail(pids.status());
        task::PidsResponse resp;
        for (pid_t p : *pids) {
          auto* info = resp.add_processes();
          info->set_pid(static_cast<uint32_t>(p));
          if (auto it = exec_ids.find(p); it != exec_ids.end()) {
            containerd::runc::v1::ProcessDetails details;
            details.set_exec_id(it->second);
            info->mutable_info()->set_type_url("containerd.runc.v1.ProcessDetails");
            info->mutable_info()->set_value(details.SerializeAsString());
          }
        }
        call.Reply(resp);
      });
}

void TaskService::Stats(Call call) {
  auto req = call.Parse<task::StatsRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id());
  if (!found.ok()) return call.Fail(found.status());
  const process::InitProcess& init = (*found)->init();
  auto exited = [id = req->id()] {
    return absl::FailedPreconditionError(
        fmt::format("container {} has exited: no cgroup to read", id));
  };
  if (init.status() == Status::kStopped) return call.Fail(exited());
  env_.pool.Run<absl::StatusOr<CgroupMetrics>>(
      [pid = init.pid(), start = init.start_boottime(),
       exited]() -> absl::StatusOr<CgroupMetrics> {
        // The pid must still be the container's init: pids get reused.
        auto same = bpf::IsSameLiveProcess(pid, start);
        if (!same.ok() || !*same) return exited();
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

void TaskService::Connect(Call call) {
  auto req = call.Parse<task::ConnectRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id());
  if (!found.ok()) return call.Fail(found.status());
  task::ConnectResponse resp;
  resp.set_shim_pid(static_cast<uint32_t>(getpid()));
  resp.set_task_pid(static_cast<uint32_t>((*found)->init().pid()));
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
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  if (req->stdin()) (*p)->CloseIO();
  call.Reply(google::protobuf::Empty());
}

void TaskService::ResizePty(Call call) {
  auto req = call.Parse<task::ResizePtyRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  if (req->width() > 0xffff || req->height() > 0xffff)
    return call.Fail(absl::InvalidArgumentError(
        fmt::format("window size {}x{} is out of range", req->width(), req->height())));
  (*p)->ResizePty(req->width(), req->height());
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
    const process::InitProcess& init = c->init();
    embedshim::ContainerStatus s;
    s.set_namespace_(c->ns());
    s.set_id(c->id());
    s.set_pid(static_cast<uint32_t>(init.pid()));
    s.set_status(std::string(process::Name(init.status())));
    s.set_exit_status(init.exit_status());
    s.set_created_at_unix_nano(c->base().created_at_unix_nano());
    s.set_exited_at_unix_nano(init.exited_at_unix_nano());
    auto same = bpf::IsSameLiveProcess(init.pid(), init.start_boottime());
    if (!same.ok() || !*same) {
      s.set_pid_check(kill(init.pid(), 0) == 0 && init.status() != Status::kStopped
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

void TaskService::DropUnknownTtys(absl::flat_hash_set<std::string> held) {
  absl::flat_hash_set<std::string> known;
  for (const auto& [key, c] : containers_) {
    if (c->base().terminal()) known.insert(c->init().KeeperName("tty"));
    for (const auto& [id, e] : c->execs())
      if (e->status() != Status::kDeleted) known.insert(e->KeeperName("tty"));
  }
  for (const auto& name : held) {
    if (known.contains(name)) continue;
    base::LogWarn("dropping terminal relay {}: no such process", name);
    env_.keeper.DropTty(name);
  }
}

void TaskService::Recover() {
  std::vector<std::string> errors;
  for (auto& record : env_.store.LoadAll(&errors)) {
    Key key{record.namespace_(), record.id()};
    if (record.status() == embedshim::DELETED) {
      AddTombstone(record);
      continue;
    }
    if (record.status() == embedshim::CREATING &&
        access(process::CreateRuntimeMarker(record.bundle()).c_str(), F_OK) == 0) {
      // Its `runc create` was spawned and may run on as an orphan: waited
      // for and adopted (or undone), never raced by a second one.
      auto c = std::make_unique<Container>(env_, router_, record);
      Container& settling = *c;
      containers_[key] = std::move(c);
      SettleOrphanedCreate(settling);
      continue;
    }
    if (record.status() == embedshim::CREATING) {
      // The server died during a create before it spawned `runc create`:
      // undo it. The replayed Create, if containerd still waits for it,
      // then starts afresh. Rare, so done here, synchronously.
      base::LogFor(base::LogLevel::kWarn, record.namespace_(), record.id(),
             "cleaning up a create that was in flight");
      (void)env_.runtime.Delete(record, /*force=*/true);
      (void)env_.store.Remove(record.namespace_(), record.id());
      continue;
    }
    auto c = std::make_unique<Container>(env_, router_, record);
    for (const auto& exec : record.execs()) c->RestoreExec(exec);
    const process::InitProcess& init = c->init();
    if (init.alive()) {
      // Still the same process? (A stopped one is reported by the replay.)
      auto same = bpf::IsSameLiveProcess(init.pid(), init.start_boottime());
      if (same.ok() && !*same)
        base::LogFor(base::LogLevel::kWarn, c->ns(), c->id(), "pid {} is no longer the container's process",
               init.pid());
    }
    // `runc start` ran but the server died before it said so: once runc
    // init has exec'd the user's process, the container was started.
    if (init.status() == Status::kCreated && !env_.runtime.WaitsInInit(init.pid()))
      c->init().MarkStarted();
    c->Recover();
    // Its cgroup lives until the Delete; an exit replayed below is then
    // preceded by the OOM kills counted meanwhile.
    if (c->init().status() != Status::kStopped) c->WatchOom(/*recovered=*/true);
    containers_[key] = std::move(c);
  }
  for (const auto& e : errors) base::LogError("recover: {}", e);
  // Exits recorded while no server ran: the pinned map is the truth.
  if (auto exits = replay_(); exits.ok()) {
    for (const auto& exit : *exits) OnExit(exit);
  }
  base::LogInfo("recovered {} containers", containers_.size());
}

}  // namespace shim
